"""lanyard's OAuth authorization server checked by libraries nobody here wrote, the way an MCP
tool server that knows nothing of lanyard would check it: RFC 8414 discovery (authlib's field
validators), the RFC 9728 document `lanyard oauth resource-metadata` prints (mcp's model), access
tokens verified by PyJWT, and a real MCP server (the `mcp` SDK's MCPServer over streamable HTTP)
guarded by authlib's RFC 9068 validator plus RFC 7662 introspection at lanyard. Then the token
endpoint's refusals, status, error code and Cache-Control.

usage: oauth_mcp.py INPUT_JSON

INPUT_JSON (written by tests/tests/oauth_mcp.rs) holds: issuer, ca_file (the CA of lanyard's
HTTPS endpoint), resource and other_resource (URIs the policy lets the workload read), workload
(its SPIFFE ID), as_metadata_cli (`lanyard oauth show --output json`), resource_metadata (the
stdout of `lanyard oauth resource-metadata`, with scope tools:read and a name), JWT-SVIDs
svid_issuer (aud = issuer), svid_token_endpoint (aud = token endpoint) and svid_other_audience
(aud = something else), task tokens task_token (live, audience = resource, op tools:read) and
task_token_to_end / task_to_end_id, and access_token_ttl (seconds, as the server was configured).

Prints one line per check (`ok   <check>`); on the first failure prints `FAIL <check>: <why>`
and exits 1. Handshake: after it holds an access token exchanged from task_token_to_end, it
prints `end-task <id>` and waits for the line `ended` on stdin (the caller ends the task).
"""

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import socket
import ssl
import sys
import threading
import time
import traceback
import warnings
from urllib.parse import urlsplit

import httpx
import httpx2
import jwt
import uvicorn
from authlib.oauth2.rfc6750.errors import InsufficientScopeError, InvalidTokenError
from authlib.oauth2.rfc7662 import IntrospectTokenValidator
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from joserfc.jwk import KeySet
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.shared.auth import ProtectedResourceMetadata

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_SPIFFE = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
SCOPE = "tools:read"
# RFC 9068 §2.2: the claims an access token must carry.
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti", "client_id"]
HTTP_TIMEOUT = 30
# How long the revoked token may take to introspect inactive after the task ended.
REVOCATION_TIMEOUT = 30
# Past `exp`, how long to wait for the expired token to be refused.
EXPIRY_MARGIN = 30
# How long a request's body may wait for an answer to its headers alone.
BODY_DELAY = 1
# lanyard refuses a token request body over 64 KiB.
BODY_LIMIT = 64 * 1024


class Failure(Exception):
    """A check that did not hold; the message says what was seen."""


def expect(condition, why):
    if not condition:
        raise Failure(why)


@contextlib.contextmanager
def check(name):
    """One check: prints `ok   name`, or `FAIL name: why` and exits 1."""
    try:
        yield
    except Failure as e:
        print(f"FAIL {name}: {e}", flush=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 -- any error fails the check, with its trace
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        traceback.print_exc()
        sys.exit(1)
    print(f"ok   {name}", flush=True)


def wait_until(what, timeout, probe):
    """Calls probe until it returns something truthy, for at most timeout seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failure(f"timed out after {timeout}s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def brief(r):
    """A response for a failure message (bodies may hold tokens: keep them short)."""
    text = r.text if len(r.text) <= 300 else r.text[:300] + "..."
    return f"HTTP {r.status_code}: {text}"


def unverified(token):
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


# === lanyard's endpoints ===


class Lanyard:
    """lanyard's authorization server as the test sees it: HTTPS trusting only the test CA."""

    def __init__(self, args):
        self.args = args
        self.issuer = args["issuer"]
        self.ssl = ssl.create_default_context(cafile=args["ca_file"])
        self.http = httpx.Client(verify=self.ssl, timeout=HTTP_TIMEOUT)
        self.md = None

    def discover(self):
        r = self.http.get(self.issuer + "/.well-known/oauth-authorization-server")
        expect(r.status_code == 200, brief(r))
        self.md = r.json()
        return self.md

    def token(self, form, **kwargs):
        return self.http.post(self.md["token_endpoint"], data=form, **kwargs)

    def client_auth(self, svid=None):
        """A jwt-spiffe client assertion (draft-ietf-oauth-spiffe-client-auth §3.1)."""
        return {
            "client_assertion_type": JWT_SPIFFE,
            "client_assertion": svid or self.args["svid_issuer"],
        }

    def jwt_bearer(self, svid, resource, scope=SCOPE):
        form = {"grant_type": JWT_BEARER, "assertion": svid, "scope": scope}
        if resource is not None:
            form["resource"] = resource
        return self.token(form)

    def client_credentials(self, resource, svid=None):
        form = {"grant_type": "client_credentials", "resource": resource, "scope": SCOPE}
        return self.token(form | self.client_auth(svid))

    def exchange(self, subject_token, resource=None, scope=None, token_type=TOKEN_TYPE_JWT):
        form = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": token_type,
        }
        if resource is not None:
            form["resource"] = resource
        if scope is not None:
            form["scope"] = scope
        return self.token(form | self.client_auth())

    def introspect(self, token, authenticated=True):
        form = {"token": token, "token_type_hint": "access_token"}
        if authenticated:
            form |= self.client_auth()
        return self.http.post(self.md["introspection_endpoint"], data=form)


def no_store(r):
    cache_control = r.headers.get("cache-control", "")
    expect("no-store" in cache_control, f"Cache-Control is {cache_control!r}, not no-store")


def issued(r, *, exchange=False):
    """The access token of a successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1)."""
    expect(r.status_code == 200, brief(r))
    expect(
        r.headers.get("content-type", "").startswith("application/json"),
        f"Content-Type {r.headers.get('content-type')!r}",
    )
    no_store(r)
    body = r.json()
    expect(body.get("token_type") == "Bearer", f"token_type in {body}")
    expect(isinstance(body.get("expires_in"), int) and body["expires_in"] > 0, f"expires_in in {body}")
    expect(isinstance(body.get("access_token"), str), f"no access_token in {body}")
    if exchange:
        expect(body.get("issued_token_type") == TOKEN_TYPE_ACCESS, f"issued_token_type in {body}")
    return body


def refused(r, status, error):
    """An RFC 6749 §5.2 error response."""
    expect(r.status_code == status, f"want HTTP {status}, got {brief(r)}")
    expect(
        r.headers.get("content-type", "").startswith("application/json"),
        f"Content-Type {r.headers.get('content-type')!r}, {brief(r)}",
    )
    body = r.json()
    expect(body.get("error") == error, f"error {body.get('error')!r}, want {error!r}: {body}")
    no_store(r)


# === a tool server: PyJWT, and an MCP server guarded by authlib ===


class PyJwtVerifier:
    """PyJWT as a resource server uses it: keys from jwks_uri, ES256, its own audience."""

    def __init__(self, lanyard):
        self.issuer = lanyard.issuer
        self.keys = jwt.PyJWKClient(lanyard.md["jwks_uri"], ssl_context=lanyard.ssl)

    def decode(self, token, audience):
        key = self.keys.get_signing_key_from_jwt(token).key
        claims = jwt.decode(
            token,
            key,
            algorithms=["ES256"],
            audience=audience,
            issuer=self.issuer,
            options={"require": REQUIRED_CLAIMS},
        )
        # RFC 9068 §4: the resource server MUST check typ; PyJWT does not.
        typ = jwt.get_unverified_header(token).get("typ")
        expect(typ == "at+jwt", f"header typ is {typ!r}, not at+jwt")
        return claims


class LanyardTokenVerifier:
    """An mcp TokenVerifier: authlib's RFC 9068 validator (signature with the keys of jwks_uri,
    typ, iss, aud = this resource, exp, the required claims), then RFC 7662 introspection at
    lanyard (revocation), authenticated with a jwt-spiffe client assertion. It reports the
    token's `aud` as the resource, so the SDK's own check (validate_token_resource) runs on what
    lanyard issued. `last_refusal` says why the last token was refused, so that each 401 the test
    sees can be tied to its cause."""

    def __init__(self, lanyard, jwks, resource):
        class Validator(JWTBearerTokenValidator):
            def get_jwks(self):
                return jwks

        self.lanyard = lanyard
        self.validator = Validator(issuer=lanyard.issuer, resource_server=resource)
        self.last_refusal = None

    def check_jwt(self, token):
        """authlib's verdict on the JWT alone: the claims, or raises InvalidTokenError."""
        claims = self.validator.authenticate_token(token)
        self.validator.validate_token(claims, None, None)
        return claims

    async def verify_token(self, token):
        self.last_refusal = None
        try:
            claims = self.check_jwt(token)
        except (InvalidTokenError, InsufficientScopeError) as e:
            cause = e.__cause__
            self.last_refusal = f"jwt: {type(cause).__name__}: {cause}"
            return None
        form = {"token": token, "token_type_hint": "access_token"} | self.lanyard.client_auth()
        async with httpx.AsyncClient(verify=self.lanyard.ssl, timeout=HTTP_TIMEOUT) as c:
            r = await c.post(self.lanyard.md["introspection_endpoint"], data=form)
        if r.status_code != 200 or not r.json().get("active"):
            self.last_refusal = f"introspection: HTTP {r.status_code} {r.text}"
            return None
        aud = claims["aud"]
        return AccessToken(
            token=token,
            client_id=claims["client_id"],
            scopes=claims.get("scope", "").split(),
            expires_at=claims["exp"],
            resource=aud if isinstance(aud, str) else None,
            subject=claims["sub"],
            claims=dict(claims),
        )


class ToolServer:
    """A real MCPServer over streamable HTTP on 127.0.0.1, whose canonical URI (RFC 8707
    resource, RFC 9728 `resource`) is the test's resource, as behind a TLS-terminating proxy."""

    INIT = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "lanyard-oauth-test", "version": "0"},
        },
    }

    def __init__(self, lanyard, verifier, resource):
        self.verifier = verifier
        mcp = MCPServer(
            "lanyard-test-tools",
            token_verifier=verifier,
            auth=AuthSettings(
                issuer_url=lanyard.issuer,
                resource_server_url=resource,
                required_scopes=[SCOPE],
                validate_token_resource=True,
            ),
        )

        @mcp.tool()
        def echo(text: str) -> str:
            return text

        app = mcp.streamable_http_app(stateless_http=True, json_response=True)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.url = self.base + "/mcp"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
        threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True).start()
        wait_until("the MCP server to start", HTTP_TIMEOUT, lambda: self.server.started)

    def post(self, token):
        """An MCP initialize request with `token` (None: no Authorization header)."""
        headers = {"Accept": "application/json, text/event-stream"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.post(self.url, json=self.INIT, headers=headers, timeout=HTTP_TIMEOUT)

    def call_echo(self, token, text):
        """A real MCP client session: initialize, then tools/call echo."""

        async def run():
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx2.AsyncClient(headers=headers, timeout=HTTP_TIMEOUT) as hc:
                async with Client(streamable_http_client(self.url, http_client=hc)) as client:
                    result = await client.call_tool("echo", {"text": text})
                    return result.content[0].text

        return asyncio.run(run())

    def accepts(self, token, what):
        r = self.post(token)
        expect(r.status_code == 200, f"{what}: {brief(r)} (verifier: {self.verifier.last_refusal})")

    def refuses(self, token, cause):
        """401 invalid_token pointing at the resource metadata, and the verifier refused the
        token for `cause` (a substring of its reason), not for something else."""
        self.verifier.last_refusal = None
        r = self.post(token)
        expect(r.status_code == 401, f"want HTTP 401, got {brief(r)}")
        challenge = r.headers.get("www-authenticate", "")
        expect('error="invalid_token"' in challenge, f"WWW-Authenticate {challenge!r}")
        reason = self.verifier.last_refusal
        expect(reason is not None and cause in reason, f"refused for {reason!r}, want {cause!r}")

    def stop(self):
        self.server.should_exit = True


# === the checks ===


def check_discovery(lanyard):
    args = lanyard.args
    issuer = lanyard.issuer
    with check("RFC 8414 metadata at /.well-known/oauth-authorization-server, issuer identical"):
        md = lanyard.discover()
        # RFC 8414 §3.3: a different issuer means the document must not be used.
        expect(md.get("issuer") == issuer, f"issuer {md.get('issuer')!r}, fetched from {issuer!r}")
    with check("the metadata is what `lanyard oauth show` prints"):
        expect(md == json.loads(args["as_metadata_cli"]), f"{md} != {args['as_metadata_cli']}")
    with check("endpoints under the issuer (token, jwks, introspection)"):
        for field, path in [
            ("token_endpoint", "/oauth/token"),
            ("jwks_uri", "/oauth/jwks.json"),
            ("introspection_endpoint", "/oauth/introspect"),
        ]:
            expect(md.get(field) == issuer + path, f"{field} is {md.get(field)!r}")
    with check("grant types and client authentication methods advertised"):
        grants = md.get("grant_types_supported", [])
        for grant in [JWT_BEARER, TOKEN_EXCHANGE, "client_credentials"]:
            expect(grant in grants, f"{grant} not in {grants}")
        methods = md.get("token_endpoint_auth_methods_supported", [])
        expect("spiffe_jwt" in methods and "none" in methods, f"token endpoint methods {methods}")
        methods = md.get("introspection_endpoint_auth_methods_supported", [])
        expect("spiffe_jwt" in methods, f"introspection methods {methods}")
    with check("no authorization endpoint and no response types (machine grants only)"):
        for field in ["authorization_endpoint", "response_types_supported"]:
            expect(field not in md, f"{field} present: {md.get(field)!r}")
    with check("authlib's RFC 8414 field validators (all but response_types_supported)"):
        # The RFC makes response_types_supported REQUIRED yet says empty fields MUST be omitted;
        # an AS without an authorization endpoint omits it, so authlib's whole-document
        # validate() cannot pass. Every other field's validator must.
        metadata = AuthorizationServerMetadata(md)
        validators = [n for n in dir(metadata) if n.startswith("validate_")]
        for name in validators:
            if name != "validate_response_types_supported":
                getattr(metadata, name)()
    return md


def check_jwks(lanyard):
    with check("jwks_uri serves a plain RFC 7517 JWKS (kid, use sig, ES256) both libraries read"):
        r = lanyard.http.get(lanyard.md["jwks_uri"])
        expect(r.status_code == 200, brief(r))
        jwks = r.json()
        expect(jwks.get("keys"), f"no keys: {jwks}")
        for key in jwks["keys"]:
            expect(key.get("kid"), f"key without kid: {key}")
            expect(key.get("use") == "sig", f"use {key.get('use')!r} (a SPIFFE bundle?): {key}")
            expect(key.get("alg") == "ES256", f"alg {key.get('alg')!r}: {key}")
        # authlib (joserfc) refuses `use` other than sig/enc on import; PyJWT drops such keys.
        keyset = KeySet.import_key_set(jwks)
        expect(len(jwt.PyJWKSet.from_dict(jwks).keys) == len(jwks["keys"]), "PyJWT dropped keys")
    return keyset


def check_resource_metadata(lanyard, resource):
    raw = lanyard.args["resource_metadata"]
    with check("`lanyard oauth resource-metadata` parses as mcp's ProtectedResourceMetadata"):
        prm = ProtectedResourceMetadata.model_validate_json(raw)
        doc = json.loads(raw)
        # RFC 9728 §3.3: the resource is echoed exactly.
        expect(doc["resource"] == resource, f"resource {doc['resource']!r}")
        expect(doc["authorization_servers"] == [lanyard.issuer], f"{doc['authorization_servers']}")
        expect(prm.scopes_supported == [SCOPE], f"scopes_supported {prm.scopes_supported}")
        expect(prm.bearer_methods_supported == ["header"], f"{prm.bearer_methods_supported}")
        expect(prm.resource_name, f"no resource_name: {doc}")
    return doc


def check_claims(claims, args, resource):
    expect(claims["iss"] == args["issuer"], f"iss {claims['iss']!r}")
    # RFC 9068 §3: aud is the resource indicator, exactly as requested (one value).
    expect(claims["aud"] == resource, f"aud {claims['aud']!r}, want {resource!r}")
    expect(claims["sub"] == args["workload"], f"sub {claims['sub']!r}")
    expect(claims["client_id"] == args["workload"], f"client_id {claims['client_id']!r}")
    expect(claims.get("scope") == SCOPE, f"scope {claims.get('scope')!r}")
    lifetime = claims["exp"] - claims["iat"]
    expect(0 < lifetime <= args["access_token_ttl"], f"exp - iat = {lifetime}")
    expect(isinstance(claims.get("lanyard", {}).get("txn"), str), f"lanyard.txn in {claims}")


def main():
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    with open(sys.argv[1], encoding="utf-8") as f:
        args = json.load(f)
    versions = ", ".join(
        f"{p} {importlib.metadata.version(p)}" for p in ["mcp", "Authlib", "PyJWT", "httpx"]
    )
    print(f"using {versions}", flush=True)
    resource, other = args["resource"], args["other_resource"]
    lanyard = Lanyard(args)

    check_discovery(lanyard)
    keyset = check_jwks(lanyard)
    prm = check_resource_metadata(lanyard, resource)
    pyjwt = PyJwtVerifier(lanyard)
    verifier = LanyardTokenVerifier(lanyard, keyset, resource)
    tools = ToolServer(lanyard, verifier, resource)

    with check("the MCP server serves the same RFC 9728 document as lanyard printed"):
        well_known = tools.base + "/.well-known/oauth-protected-resource/mcp"
        served = httpx.get(well_known, timeout=HTTP_TIMEOUT).json()
        mine = {k: v for k, v in prm.items() if k != "resource_name"}
        expect(served == mine, f"served {served}, lanyard printed {prm}")
    with check("MCP without a token: 401 with resource_metadata"):
        r = tools.post(None)
        expect(r.status_code == 401, brief(r))
        challenge = r.headers.get("www-authenticate", "")
        meta_url = resource.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
        expect(f'resource_metadata="{meta_url}"' in challenge, f"WWW-Authenticate {challenge!r}")

    # Each token is checked soon after it is issued: access_token_ttl is short.
    with check("jwt-bearer grant (JWT-SVID aud = token endpoint) for the resource"):
        bearer_r = issued(lanyard.jwt_bearer(args["svid_token_endpoint"], resource))
        expect(bearer_r.get("scope") == SCOPE, f"scope in {bearer_r}")
        expect(bearer_r["expires_in"] <= args["access_token_ttl"], f"expires_in in {bearer_r}")
        token_r = bearer_r["access_token"]
    with check("PyJWT accepts it for the resource (keys from jwks_uri, iss, aud, required claims, typ)"):
        claims_r = pyjwt.decode(token_r, resource)
        check_claims(claims_r, args, resource)
        header, _ = unverified(token_r)
        expect(header.get("alg") == "ES256" and header.get("kid"), f"header {header}")
    with check("MCP accepts it: 200, and an MCP client's tools/call works"):
        tools.accepts(token_r, "jwt-bearer token")
        expect(tools.call_echo(token_r, "via jwt-bearer") == "via jwt-bearer", "echo answered otherwise")

    with check("jwt-bearer grant, same JWT-SVID, for another resource"):
        token_r2 = issued(lanyard.jwt_bearer(args["svid_token_endpoint"], other))["access_token"]
        check_claims(pyjwt.decode(token_r2, other), args, other)
    with check("PyJWT refuses the other resource's token for the resource (InvalidAudienceError)"):
        try:
            pyjwt.decode(token_r2, resource)
            raise Failure("accepted")
        except jwt.InvalidAudienceError:
            pass
    with check("MCP refuses the other resource's token: 401 (aud)"):
        tools.refuses(token_r2, "aud")
    with check("jwt-bearer grant with a JWT-SVID whose aud is the issuer"):
        token = issued(lanyard.jwt_bearer(args["svid_issuer"], other))["access_token"]
        check_claims(pyjwt.decode(token, other), args, other)

    with check("token exchange of the task token for the resource"):
        body = issued(lanyard.exchange(args["task_token"], resource=resource), exchange=True)
        expect(body.get("scope") == SCOPE, f"scope in {body}")
        token_x = body["access_token"]
        claims_x = pyjwt.decode(token_x, resource)
        check_claims(claims_x, args, resource)
    with check("MCP accepts the exchanged token: 200, and tools/call works"):
        tools.accepts(token_x, "exchanged token")
        expect(tools.call_echo(token_x, "via exchange") == "via exchange", "echo answered otherwise")
    with check("the task token itself (aud = the resource, keys of the same JWKS) is no access token"):
        # Access tokens are signed with the trust domain's JWT keys, as task tokens and JWT-SVIDs
        # are: what keeps them apart is iss and typ, which PyJWT (iss) and authlib (both) check.
        try:
            pyjwt.decode(args["task_token"], resource)
        except (jwt.PyJWTError, Failure):
            pass
        else:
            raise Failure("PyJWT accepted a task token as an access token")
        tools.refuses(args["task_token"], "jwt")
    with check("token exchange without resource defaults to the task's audience"):
        body = issued(lanyard.exchange(args["task_token"]), exchange=True)
        expect(unverified(body["access_token"])[1]["aud"] == resource, f"{body}")

    with check("client_credentials with a jwt-spiffe client assertion"):
        token_cc = issued(lanyard.client_credentials(resource))["access_token"]
        check_claims(pyjwt.decode(token_cc, resource), args, resource)
        tools.accepts(token_cc, "client_credentials token")

    with check("RFC 7662 introspection of a live token (authlib validator accepts)"):
        r = lanyard.introspect(token_x)
        expect(r.status_code == 200, brief(r))
        info = r.json()
        expect(info.get("active") is True, f"{info}")
        for claim in ["iss", "sub", "aud", "client_id", "scope", "exp", "iat", "jti"]:
            expect(info.get(claim) == claims_x[claim], f"{claim}: {info.get(claim)!r} vs token {claims_x[claim]!r}")
        expect(info.get("token_type") == "Bearer", f"token_type in {info}")

        class Introspection(IntrospectTokenValidator):
            def introspect_token(self, token_string):
                r = lanyard.introspect(token_string)
                r.raise_for_status()
                return r.json()

        introspection = Introspection()
        introspection.validate_token(introspection.authenticate_token(token_x), [SCOPE], None)
    with check("introspection without client authentication: 401 invalid_client"):
        r = lanyard.introspect(token_x, authenticated=False)
        expect(r.status_code == 401, brief(r))
        expect(r.json().get("error") == "invalid_client", r.text)

    check_revocation(lanyard, tools, verifier, introspection)
    check_refusals(lanyard, args, resource)
    check_expiry(lanyard, tools, pyjwt, introspection, token_r, claims_r)
    check_more_refusals(lanyard, args, resource)
    check_connection_kept(lanyard)
    tools.stop()
    print("all checks passed", flush=True)


def check_revocation(lanyard, tools, verifier, introspection):
    args = lanyard.args
    with check("token exchange of the task that will end; accepted while the task lives"):
        token = issued(lanyard.exchange(args["task_token_to_end"]), exchange=True)["access_token"]
        tools.accepts(token, "token of the live task")
    print(f"end-task {args['task_to_end_id']}", flush=True)
    line = sys.stdin.readline().strip()
    with check("the caller ended the task"):
        expect(line == "ended", f"read {line!r} on stdin")
    with check("introspection says inactive once the task ended"):
        wait_until(
            "the ended task's token to introspect inactive",
            REVOCATION_TIMEOUT,
            lambda: lanyard.introspect(token).json() == {"active": False},
        )
        exp = unverified(token)[1]["exp"]
        expect(time.time() < exp, "inactive only once the token expired: ending the task revoked nothing")
    with check("MCP refuses the ended task's token: 401 (introspection), though the JWT still verifies"):
        tools.refuses(token, "introspection")
        # The refusal is the revocation, not expiry: the JWT alone is still good.
        verifier.check_jwt(token)
    with check("authlib's RFC 7662 validator refuses it (invalid_token)"):
        try:
            introspection.validate_token(introspection.authenticate_token(token), [SCOPE], None)
            raise Failure("accepted")
        except InvalidTokenError:
            pass
    with check("token exchange of the ended task's token: invalid_request"):
        refused(lanyard.exchange(args["task_token_to_end"]), 400, "invalid_request")


def check_refusals(lanyard, args, resource):
    """The token endpoint's errors (RFC 6749 §5.2, RFC 7523 §3.1, RFC 8693 §2.2.2, RFC 8707)."""
    te_svid = args["svid_token_endpoint"]
    with check("unknown grant type: unsupported_grant_type"):
        form = {"grant_type": "password", "username": "u", "password": "p", "resource": resource}
        refused(lanyard.token(form), 400, "unsupported_grant_type")
    with check("jwt-bearer assertion for another audience: invalid_grant"):
        refused(lanyard.jwt_bearer(args["svid_other_audience"], resource), 400, "invalid_grant")
    with check("client assertion with aud = token endpoint: invalid_client (401)"):
        refused(lanyard.client_credentials(resource, svid=te_svid), 401, "invalid_client")
    with check("no resource: invalid_target"):
        refused(lanyard.jwt_bearer(te_svid, None), 400, "invalid_target")
    with check("resource with a #fragment: invalid_target"):
        refused(lanyard.jwt_bearer(te_svid, resource + "#frag"), 400, "invalid_target")
    with check("subject_token_type access_token: invalid_request"):
        r = lanyard.exchange(args["task_token"], token_type=TOKEN_TYPE_ACCESS)
        refused(r, 400, "invalid_request")
    with check("scope outside the task's operations: invalid_scope"):
        refused(lanyard.exchange(args["task_token"], scope="tools:write"), 400, "invalid_scope")
    with check("a body over 64 KiB: 413 invalid_request"):
        form = {"grant_type": JWT_BEARER, "assertion": "a" * (BODY_LIMIT + 1), "resource": resource}
        refused(lanyard.token(form), 413, "invalid_request")
    with check("the same JWT-SVID for the same resource a second time: invalid_grant (replay)"):
        refused(lanyard.jwt_bearer(te_svid, resource), 400, "invalid_grant")


def check_more_refusals(lanyard, args, resource):
    """Refusals the spec implies beyond the list above."""
    te_svid = args["svid_token_endpoint"]
    exchange = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": args["task_token"],
        "subject_token_type": TOKEN_TYPE_JWT,
    }
    with check("token exchange authenticated with aud = token endpoint: invalid_client (401)"):
        refused(lanyard.token(exchange | lanyard.client_auth(te_svid)), 401, "invalid_client")
    with check("token exchange for a resource that is not the task's audience: invalid_target"):
        refused(lanyard.exchange(args["task_token"], resource=args["other_resource"]), 400, "invalid_target")
    with check("a parameter given twice: invalid_request"):
        form = {"grant_type": JWT_BEARER, "assertion": te_svid, "resource": [resource, args["other_resource"]],
                "scope": SCOPE}
        refused(lanyard.token(form), 400, "invalid_request")
    with check("a JSON body instead of a form: invalid_request"):
        body = {"grant_type": JWT_BEARER, "assertion": te_svid, "resource": resource, "scope": SCOPE}
        # On a connection of its own: lanyard may close the connection after this refusal
        # without saying so (check_connection_kept below), which would fail the next request
        # sent on it, whatever that request is.
        with httpx.Client(verify=lanyard.ssl, timeout=HTTP_TIMEOUT) as alone:
            refused(alone.post(lanyard.md["token_endpoint"], json=body), 400, "invalid_request")
    with check("token exchange without client authentication: invalid_client (401, RFC 6749 §5.2)"):
        refused(lanyard.token(exchange), 401, "invalid_client")


class RawHttp:
    """HTTP/1.1 by hand over one TLS connection, to choose when a request's body is sent."""

    def __init__(self, tls):
        self.tls = tls
        self.buf = b""

    def fill(self):
        data = self.tls.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.buf += data

    def response(self):
        """(status, headers) of the next response; its Content-Length body is skipped."""
        while b"\r\n\r\n" not in self.buf:
            self.fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self.fill()
        self.buf = self.buf[length:]
        return int(lines[0].split()[1]), headers


def check_connection_kept(lanyard):
    """HTTP/1.1 keep-alive after a refusal sent before the request body was read (lanyard refuses
    a wrong Content-Type on the headers alone). A client that pools connections, as httpx does,
    sends its next request on the same connection: the server must then either answer it or
    have said `Connection: close`. By hand, to send the body only after the answer, as a client
    whose body is in a later TLS record than its headers may (a server that waits for the body
    gets it after BODY_DELAY)."""
    url = urlsplit(lanyard.md["token_endpoint"])

    def request(content_type, body):
        return (
            f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()

    with check("a request refused before its body was read: the connection answers the next request, "
               "or the refusal said Connection: close"):
        raw = socket.create_connection((url.hostname, url.port), timeout=HTTP_TIMEOUT)
        with lanyard.ssl.wrap_socket(raw, server_hostname=url.hostname) as tls:
            conn = RawHttp(tls)
            body = json.dumps({"grant_type": JWT_BEARER}).encode()
            tls.sendall(request("application/json", body))
            tls.settimeout(BODY_DELAY)
            try:
                conn.fill()
                answered_early = True
            except TimeoutError:
                answered_early = False
            tls.settimeout(HTTP_TIMEOUT)
            if not answered_early:
                tls.sendall(body)
            status, headers = conn.response()
            expect(status == 400, f"HTTP {status} for a JSON body")
            if "close" in headers.get("connection", "").lower():
                return
            form = b"grant_type=password"
            try:
                if answered_early:
                    tls.sendall(body)
                tls.sendall(request("application/x-www-form-urlencoded", form) + form)
                status, _ = conn.response()
            except OSError as e:
                raise Failure(
                    "lanyard closed the connection after its 400 without `Connection: close`; the next "
                    f"request on it got {type(e).__name__}: {e} (httpx: RemoteProtocolError)"
                ) from e
            expect(status == 400, f"HTTP {status} for an unknown grant type")


def check_expiry(lanyard, tools, pyjwt, introspection, token, claims):
    """The first token, accepted earlier, refused once its `exp` has passed: wait for that moment
    (bounded), not a guessed while."""
    with check("the jwt-bearer token expires (access_token_ttl); waited for exp, bounded"):
        limit = claims["exp"] - time.time() + EXPIRY_MARGIN
        wait_until("the access token's exp to pass", limit, lambda: time.time() > claims["exp"])
    with check("PyJWT refuses the expired token (ExpiredSignatureError)"):
        try:
            pyjwt.decode(token, lanyard.args["resource"])
            raise Failure("accepted")
        except jwt.ExpiredSignatureError:
            pass
    with check("MCP refuses the expired token: 401 (exp)"):
        tools.refuses(token, "Expired")
    with check("introspection says the expired token is inactive"):
        r = lanyard.introspect(token)
        expect(r.status_code == 200 and r.json() == {"active": False}, brief(r))
        try:
            introspection.validate_token(introspection.authenticate_token(token), [SCOPE], None)
            raise Failure("authlib's introspection validator accepted it")
        except InvalidTokenError:
            pass


if __name__ == "__main__":
    main()
