import factory

from users import services
from users.models import User


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    full_name = factory.Faker("name")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct horse battery staple")

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


def create_verification(user: User | None = None):
    """A user and a verification, through the service (in ``transaction=True`` tests its message
    is queued on commit, as in production; in plain ``django_db`` tests it is not)."""
    user = user or UserFactory()
    return services.verification_create(user=user)
