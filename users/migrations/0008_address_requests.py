"""Password-reset and resend requests as rows (``AddressRequest``): the web request records one for
every address and queues its id; a worker looks the address up. See users/services/address_requests.py.
"""

import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('users', '0007_latest_verification_state'),
    ]

    operations = [
        migrations.CreateModel(
            name='AddressRequest',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('password_reset', 'password reset'), ('verification_resend', 'new verification link')], max_length=32)),
                ('address', models.CharField(help_text='The canonical (lower-case) address asked about.', max_length=254)),
                ('created_at', models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ('dispatched_at', models.DateTimeField(help_text='When a message for it was last put on the queue.')),
                ('processed_at', models.DateTimeField(blank=True, help_text='When a worker looked the address up.', null=True)),
            ],
            options={
                'ordering': ['-created_at', '-id'],
                'indexes': [models.Index(condition=models.Q(('processed_at__isnull', True)), fields=['dispatched_at'], name='users_addrreq_unprocessed')],
            },
        ),
    ]
