-- wrk script for deploy/bench/roles.py: POST one small event over and over.
wrk.method = "POST"
wrk.body = '{"eventType":"pageview","siteId":"localhost","url":"http://localhost/p","sessionId":"s1"}'
wrk.headers["Content-Type"] = "application/json"
