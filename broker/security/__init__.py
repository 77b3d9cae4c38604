"""What every page relies on, whatever the login mode: signed tokens (`signing`), the
broker's cookies (`cookies`), CSRF tokens for forms (`csrf`), `next=` targets that stay
on our origin (`redirects`), and who may in and who is an admin (`access`).

A package beside `broker/auth/`, not inside it: `auth`'s public face is "pick a login
mode" (`Authenticator`, `make_authenticator`), and the login modes use these modules
as much as the pages, forms, proxy and admin console do. Inside `auth` every form
would import a login package for a cookie name. Nothing here imports `auth`.
"""
