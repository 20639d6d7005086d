"""The state of each user's latest verification email, as a column of users_user the database keeps.

The admin's "verification email" filter asks "whose latest verification email is failed?" of a
million users. Answering it from the emails means a look at every user's newest email; answering it
from a column of the users table is an index range: ``(verification_state, created_at DESC, id
DESC)`` gives the page, newest first, and its count.

The column is written by triggers on ``users_outboundemail`` and by nothing else (``User.save()``
leaves it out, so a stale instance can't write an old value back): the statement that inserts,
changes the state of, or deletes a verification email also sets its user's column to the state of
the user's latest one (newest ``created_at``, then ``id``, as the admin has always ordered them).
Whoever writes the email — the engine, the sweep, the admin, an operator's SQL — keeps it true.
(On SQLite, a later migration that rebuilds users_outboundemail drops its triggers: it must create
them again.)

On PostgreSQL the trigger first locks the user row and only then, in a statement of its own (a
fresh snapshot, which sees a newer email committed while it waited), reads the latest email. The
engine's statements lock the user before the email (``users.services.delivery``), the order the
account flows use, so they never deadlock with each other.
"""

from django.db import migrations, models

# Every user's latest verification email (newest created_at, then id), in bulk.
BACKFILL_POSTGRESQL = """
UPDATE users_user AS u SET verification_state = latest.state
FROM (SELECT DISTINCT ON (user_id) user_id, state FROM users_outboundemail WHERE kind = 'verification'
      ORDER BY user_id, created_at DESC, id DESC) AS latest
WHERE u.id = latest.user_id AND u.verification_state <> latest.state
"""
# One user's, as every trigger recomputes it: one descent of users_email_latest_verif.
LATEST = """COALESCE((
    SELECT e.state FROM users_outboundemail AS e WHERE e.user_id = {owner} AND e.kind = 'verification'
    ORDER BY e.created_at DESC, e.id DESC LIMIT 1), '')"""
FUNCTION_POSTGRESQL = (  # noqa: S608 - constant SQL, no input
    f"""CREATE FUNCTION users_latest_verification_state() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    owner bigint;
    latest varchar(16);
BEGIN
    IF TG_OP = 'DELETE' THEN owner := OLD.user_id; ELSE owner := NEW.user_id; END IF;
    -- Lock the user first: the next statement's snapshot sees an email committed while we waited.
    PERFORM 1 FROM users_user WHERE id = owner FOR NO KEY UPDATE;
    latest := {LATEST.format(owner="owner")};
    UPDATE users_user SET verification_state = latest WHERE id = owner AND verification_state <> latest;
    RETURN NULL;
END
$$
"""
)
TRIGGERS_POSTGRESQL = [
    "CREATE TRIGGER users_email_latest_state_insert AFTER INSERT ON users_outboundemail FOR EACH ROW "
    "WHEN (NEW.kind = 'verification') EXECUTE FUNCTION users_latest_verification_state()",
    "CREATE TRIGGER users_email_latest_state_update AFTER UPDATE OF state ON users_outboundemail FOR EACH ROW "
    "WHEN (NEW.kind = 'verification' AND OLD.state IS DISTINCT FROM NEW.state) "
    "EXECUTE FUNCTION users_latest_verification_state()",
    "CREATE TRIGGER users_email_latest_state_delete AFTER DELETE ON users_outboundemail FOR EACH ROW "
    "WHEN (OLD.kind = 'verification') EXECUTE FUNCTION users_latest_verification_state()",
]


def _set_sqlite(row: str) -> str:
    latest = LATEST.format(owner=f"{row}.user_id")
    return f"BEGIN UPDATE users_user SET verification_state = {latest} WHERE id = {row}.user_id; END"  # noqa: S608


TRIGGERS_SQLITE = [
    "CREATE TRIGGER users_email_latest_state_insert AFTER INSERT ON users_outboundemail "
    f"WHEN NEW.kind = 'verification' {_set_sqlite('NEW')}",
    "CREATE TRIGGER users_email_latest_state_update AFTER UPDATE OF state ON users_outboundemail "
    f"WHEN NEW.kind = 'verification' AND OLD.state IS NOT NEW.state {_set_sqlite('NEW')}",
    "CREATE TRIGGER users_email_latest_state_delete AFTER DELETE ON users_outboundemail "
    f"WHEN OLD.kind = 'verification' {_set_sqlite('OLD')}",
]
BACKFILL_SQLITE = f"UPDATE users_user SET verification_state = {LATEST.format(owner='users_user.id')}"  # noqa: S608


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"the latest-state trigger is written for PostgreSQL and SQLite, not {vendor}")
    postgresql = vendor == "postgresql"
    # The triggers first: creating them locks users_outboundemail until the migration commits, so no
    # email can change between the backfill's snapshot and the moment the triggers take over.
    statements = [FUNCTION_POSTGRESQL, *TRIGGERS_POSTGRESQL] if postgresql else list(TRIGGERS_SQLITE)
    statements.append(BACKFILL_POSTGRESQL if postgresql else BACKFILL_SQLITE)
    for statement in statements:
        schema_editor.execute(statement)


def backwards(apps, schema_editor):
    for trigger in (
        "users_email_latest_state_insert",
        "users_email_latest_state_update",
        "users_email_latest_state_delete",
    ):
        on = " ON users_outboundemail" if schema_editor.connection.vendor == "postgresql" else ""
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger}{on}")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS users_latest_verification_state()")


class Migration(migrations.Migration):
    dependencies = [("users", "0006_scale_indexes")]

    operations = [
        migrations.AddField(
            model_name="user",
            name="verification_state",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                editable=False,
                help_text="The state of the latest verification email (kept by the database).",
                max_length=16,
            ),
        ),
        # The old filter's index (failed emails first) is read by nobody now; the triggers read this
        # one. With only (state, user) to go by, a fresh database's planner walked that index for
        # the user (3 ms a write); this is one descent.
        migrations.RemoveIndex(model_name="outboundemail", name="users_email_verification_state"),
        migrations.AddIndex(
            model_name="outboundemail",
            index=models.Index(
                condition=models.Q(("kind", "verification")),
                fields=["user", "-created_at", "-id"],
                name="users_email_latest_verif",
            ),
        ),
        migrations.RunPython(forwards, backwards, elidable=False),
        migrations.AddIndex(
            model_name="user",
            index=models.Index(
                fields=["verification_state", "-created_at", "-id"], name="users_user_verification_state"
            ),
        ),
    ]
