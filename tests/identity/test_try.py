from tests.identity.helpers import Browser, login
from tests.identity.provider import CLIENT_ID, CLIENT_SECRET

def test_try(start_broker, provider):
    broker = start_broker(lambda b: provider.add_client(b.url), SDB_AUTH="oidc", SDB_OIDC_ISSUER=provider.issuer,
        SDB_OIDC_CLIENT_ID=CLIENT_ID, SDB_OIDC_CLIENT_SECRET=CLIENT_SECRET)
    b = Browser()
    r = login(b, broker, "ann", "/stub/whoami")
    print(r.status, r.headers, r.text[:500])
    r = b.follow(r)
    print(r.status, r.text[:500])
    print(broker.log_text()[-3000:])
