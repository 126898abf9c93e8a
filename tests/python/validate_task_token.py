"""Validates a lanyard task token with PyJWT and the trust domain's JWT keys, as a tool server
that knows nothing of lanyard would: a JWKS (the SPIFFE bundle's `jwt-svid` keys), ES256, the
tool's own audience. Prints the claims as JSON, or `expired` / `invalid: <reason>` and exits 1.

usage: validate_task_token.py BUNDLE_JSON AUDIENCE TOKEN
"""

import json
import sys

import jwt


def main() -> int:
    bundle_path, audience, token = sys.argv[1:4]
    with open(bundle_path, encoding="utf-8") as f:
        bundle = json.load(f)
    # A SPIFFE bundle is a JWKS; the JWT-SVID keys are the ones with "use": "jwt-svid".
    keys = {k["kid"]: k for k in bundle["keys"] if k.get("use") == "jwt-svid"}
    kid = jwt.get_unverified_header(token).get("kid")
    if kid not in keys:
        print(f"invalid: no key {kid!r} in the bundle")
        return 1
    key = jwt.PyJWK(keys[kid], algorithm="ES256")
    try:
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["ES256"],
            audience=audience,
            options={"require": ["sub", "aud", "exp"]},
        )
    except jwt.ExpiredSignatureError:
        print("expired")
        return 1
    except jwt.InvalidTokenError as e:
        print(f"invalid: {e}")
        return 1
    print(json.dumps(claims))
    return 0


if __name__ == "__main__":
    sys.exit(main())
