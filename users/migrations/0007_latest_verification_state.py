"""The state of each user's latest verification email, as a column of users_user the database keeps.

The admin's "verification email" filter asks "whose latest verification email is failed?" of a
million users. Answering it from the emails means a look at every user's newest email; answering it
from a column of the users table is an index range: ``(verification_state, created_at DESC, id
DESC)`` gives the page, newest first, and its count.

The column is written by a trigger on ``users_outboundemail`` and by nothing else (``User.save()``
leaves it out, so a stale instance can't write an old value back): the statement that inserts a verification
email or changes its state also sets its user's column, if that email is the user's latest
(newest ``created_at``, then ``id``, as the admin has always ordered them); deleting an email sets
it to the latest of those left. Whoever writes the email — the engine, the sweep, the admin, an
operator's SQL — keeps it true. (On SQLite, a later migration that rebuilds users_outboundemail
drops its triggers: it must create them again.)

On PostgreSQL the trigger first locks the user row and only then, in a statement of its own (a
fresh snapshot, which sees a newer email committed while it waited), decides whether the email is
the latest. The engine's statements lock the user before the email (``users.services.delivery``),
the order the account flows use, so they never deadlock with each other.
"""

from django.db import migrations, models

# Every user's latest verification email, as the trigger decides it.
BACKFILL_POSTGRESQL = """
UPDATE users_user AS u SET verification_state = latest.state
FROM (SELECT DISTINCT ON (user_id) user_id, state FROM users_outboundemail WHERE kind = 'verification'
      ORDER BY user_id, created_at DESC, id DESC) AS latest
WHERE u.id = latest.user_id
"""
NEWER = """
    SELECT 1 FROM users_outboundemail AS newer
    WHERE newer.user_id = NEW.user_id AND newer.kind = 'verification'
      AND (newer.created_at > NEW.created_at OR (newer.created_at = NEW.created_at AND newer.id > NEW.id))
"""
FUNCTION_POSTGRESQL = (  # noqa: S608 - constant SQL, no input
    f"""CREATE FUNCTION users_latest_verification_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Lock the user first: an email committed for them while we wait is seen by the next statement.
    PERFORM 1 FROM users_user WHERE id = NEW.user_id FOR NO KEY UPDATE;
    UPDATE users_user SET verification_state = NEW.state
    WHERE id = NEW.user_id AND verification_state <> NEW.state AND NOT EXISTS ({NEWER});
    RETURN NULL;
END
$$
"""
)
# A deleted email (its link deleted in the admin, its user deleted): the latest of those left.
LATEST_LEFT = """
    SELECT left_.state FROM users_outboundemail AS left_
    WHERE left_.user_id = OLD.user_id AND left_.kind = 'verification'
    ORDER BY left_.created_at DESC, left_.id DESC LIMIT 1
"""
DELETED_FUNCTION_POSTGRESQL = (  # noqa: S608 - constant SQL, no input
    f"""CREATE FUNCTION users_latest_verification_state_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    latest varchar(16);
BEGIN
    PERFORM 1 FROM users_user WHERE id = OLD.user_id FOR NO KEY UPDATE;
    latest := COALESCE(({LATEST_LEFT}), '');
    UPDATE users_user SET verification_state = latest WHERE id = OLD.user_id AND verification_state <> latest;
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
    "WHEN (OLD.kind = 'verification') EXECUTE FUNCTION users_latest_verification_state_deleted()",
]
SET_SQLITE = (  # noqa: S608 - constant SQL, no input
    f"""BEGIN
    UPDATE users_user SET verification_state = NEW.state
    WHERE id = NEW.user_id AND verification_state <> NEW.state AND NOT EXISTS ({NEWER});
END
"""
)
TRIGGERS_SQLITE = [
    "CREATE TRIGGER users_email_latest_state_insert AFTER INSERT ON users_outboundemail "
    f"WHEN NEW.kind = 'verification' {SET_SQLITE}",
    "CREATE TRIGGER users_email_latest_state_update AFTER UPDATE OF state ON users_outboundemail "
    f"WHEN NEW.kind = 'verification' AND OLD.state IS NOT NEW.state {SET_SQLITE}",
    "CREATE TRIGGER users_email_latest_state_delete AFTER DELETE ON users_outboundemail "
    "WHEN OLD.kind = 'verification' BEGIN "
    f"UPDATE users_user SET verification_state = COALESCE(({LATEST_LEFT}), '') WHERE id = OLD.user_id; END",
]
BACKFILL_SQLITE = """
UPDATE users_user SET verification_state = COALESCE((
    SELECT state FROM users_outboundemail AS e WHERE e.user_id = users_user.id AND e.kind = 'verification'
    ORDER BY e.created_at DESC, e.id DESC LIMIT 1), '')
"""


def forwards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"the latest-state trigger is written for PostgreSQL and SQLite, not {vendor}")
    postgresql = vendor == "postgresql"
    # The triggers first: creating them locks users_outboundemail until the migration commits, so no
    # email can change between the backfill's snapshot and the moment the triggers take over.
    statements = [FUNCTION_POSTGRESQL, DELETED_FUNCTION_POSTGRESQL, *TRIGGERS_POSTGRESQL] if postgresql else TRIGGERS_SQLITE
    statements.append(BACKFILL_POSTGRESQL if postgresql else BACKFILL_SQLITE)
    for statement in statements:
        schema_editor.execute(statement)


def backwards(apps, schema_editor):
    for trigger in ("users_email_latest_state_insert", "users_email_latest_state_update", "users_email_latest_state_delete"):
        on = " ON users_outboundemail" if schema_editor.connection.vendor == "postgresql" else ""
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {trigger}{on}")
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS users_latest_verification_state()")
        schema_editor.execute("DROP FUNCTION IF EXISTS users_latest_verification_state_deleted()")


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
