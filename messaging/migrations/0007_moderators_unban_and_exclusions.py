"""The Moderators group may also unban users and see (and lift) moderator removals."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ADDED = [("accounts", "unban_user"), ("messaging", "view_exclusion")]


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="Moderators")
    for app_label, codename in ADDED:
        group.permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group = Group.objects.filter(name="Moderators").first()
    if group is not None:
        for app_label, codename in ADDED:
            group.permissions.remove(
                *Permission.objects.filter(content_type__app_label=app_label, codename=codename)
            )


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_unban_permission"),
        ("messaging", "0006_timed_mutes_and_exclusions"),
    ]

    operations = [migrations.RunPython(grant, revoke)]
