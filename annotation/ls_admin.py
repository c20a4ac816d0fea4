"""Admin actions that Label Studio's REST API lacks; run INSIDE Label Studio's venv, never imported.

``<project>/.venv-ls/bin/python -I ls_admin.py <command>`` with the server's environment
(``LABEL_STUDIO_BASE_DATA_DIR`` ...) and a JSON request on stdin, so passwords and tokens never
appear in argv (visible in ``ps``) or in output:

- ``create-users``: ``{"users": [{"email", "password"?, "first_name"?}]}`` creates accounts (or
  sets the password of existing ones) and adds them to the organisation; prints one JSON line per
  user without the password.
- ``set-admin-token``: ``{"email", "token"}`` sets the admin's legacy API token (used when the
  token in the environment changed after the data dir was created).
"""

import json
import sys


def _create_users(req: dict) -> None:
    from organizations.models import Organization
    from users.models import User

    org = Organization.objects.order_by("id").first()
    if org is None:
        sys.exit("no organisation yet: start the server once (`rorem labelstudio up`) before adding users")
    for spec in req["users"]:
        email = spec["email"]
        user = User.objects.filter(email=email).first()
        created = user is None
        if created:
            user = User.objects.create_user(email=email, password=spec.get("password") or None,
                                            username=email.split("@")[0])
        elif spec.get("password"):
            user.set_password(spec["password"])
        if spec.get("first_name"):
            user.first_name = spec["first_name"]
        user.save()
        if not org.has_user(user):
            org.add_user(user)
        user.active_organization = org
        user.save(update_fields=["active_organization"])
        print(json.dumps({"email": email, "id": user.id, "created": created}))


def _set_admin_token(req: dict) -> None:
    from rest_framework.authtoken.models import Token
    from users.models import User

    user = User.objects.filter(email=req["email"]).first()
    if user is None:
        sys.exit(f"admin user {req['email']} not found in this data dir")
    Token.objects.filter(user=user).delete()
    Token.objects.create(user=user, key=req["token"])
    print(json.dumps({"email": user.email, "id": user.id, "token_set": True}))


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from label_studio.server import _setup_env

    _setup_env()
    req = json.loads(sys.stdin.read())
    {"create-users": _create_users, "set-admin-token": _set_admin_token}[sys.argv[1]](req)


if __name__ == "__main__":
    main()
