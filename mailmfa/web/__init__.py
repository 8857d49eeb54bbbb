"""mailmfa-web: the self-service page (Flask). Imported only by the web's own entry
points; the login path never imports this package."""
