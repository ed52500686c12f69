"""Unit tests of the tokenward Mercurial extension (helper/hg/tokenward.py).

Run with ``python3 -m unittest helper/hg/test_tokenward.py`` (or from this
directory). The daemon is a fake unix-socket server and the HTTP server a
tiny in-process one with Basic auth; hg's own opener and password manager are
the real ones. When this interpreter cannot import mercurial, the modules of
the ``hg`` on PATH (or ``$HG``) are used.
"""

import base64
import contextlib
import datetime
import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenward  # noqa: E402

try:
    import mercurial  # noqa: F401
except ImportError:
    found = subprocess.run(
        [os.environ.get('HG', 'hg'), 'debuginstall', '-T', '{hgmodules}'],
        capture_output=True,
        text=True,
        env=dict(os.environ, HGRCPATH='', HGPLAIN='1'),
    ).stdout.strip()
    sys.path.insert(0, os.path.dirname(found))
    os.environ.setdefault('HGMODULEPOLICY', 'allow')
from mercurial import error, url as hgurl, ui as uimod  # noqa: E402

SECRET = 'tok-s3cret-value'
GOOD = 'tok-the-right-one'


class FakeDaemon:
    """Answers `get` from a list of (scope, username, password, id); records
    every request; `silent` makes it accept and never answer."""

    def __init__(self, tokens=(), silent=False):
        self.tokens, self.silent, self.requests = list(tokens), silent, []
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, 'daemon.sock')
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(16)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b''
                while not data.endswith(b'\n'):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                request = json.loads(data)
                self.requests.append(request)
                if self.silent:
                    conn.recv(1)
                    continue
                conn.sendall(json.dumps(self.answer(request)).encode() + b'\n')

    def answer(self, request):
        if request.get('v') != 1:
            return {'v': 1, 'ok': False, 'error': 'bad version'}
        if request['op'] == 'get':
            for scope, user, password, token_id in self.tokens:
                if tokenward.scope_matches(
                    scope, request['protocol'], request['host'], request['path']
                ) and request['username'] in (None, user):
                    cred = {'id': token_id, 'username': user, 'password': password}
                    return {'v': 1, 'ok': True, 'credential': cred}
        elif request['op'] == 'reject':
            self.tokens = [t for t in self.tokens if t[2] != request['password']]
        return {'v': 1, 'ok': True}

    def ops(self):
        return [r['op'] for r in self.requests]

    def close(self):
        self.server.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.rmdir(self.dir)


class BasicAuthServer(http.server.ThreadingHTTPServer):
    """Answers 200 to `alice:GOOD` (or `carol:fromauth`), 401 otherwise."""

    valid = {('alice', GOOD), ('carol', 'fromauth')}

    def __init__(self):
        super().__init__(('127.0.0.1', 0), self.Handler)
        self.seen = []
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            header = self.headers.get('Authorization', '')
            user = None
            if header.startswith('Basic '):
                user, _, password = base64.b64decode(header[6:]).decode().partition(':')
                if (user, password) in self.server.valid:
                    self.server.seen.append(user)
                    return self.reply(200, b'ok')
            return self.reply(401, b'no', {'WWW-Authenticate': 'Basic realm="hg"'})

        def reply(self, code, body, headers=()):
            self.send_response(code)
            for name, value in dict(headers).items():
                self.send_header(name, value)
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    def url(self, path='team/repo'):
        return 'http://127.0.0.1:%d/%s?cmd=capabilities' % (self.server_port, path)

    def close(self):
        self.shutdown()
        self.server_close()


def make_ui(auth=None):
    ui = uimod.ui()
    ui.setconfig(b'ui', b'interactive', b'false')
    for name, value in (auth or {}).items():
        ui.setconfig(b'auth', name.encode(), value.encode())
    return ui


class Extension(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        tokenward.extsetup(make_ui())

    def setUp(self):
        self.daemon = FakeDaemon()
        self.http = BasicAuthServer()
        env = {'TOKENWARD_SOCKET': self.daemon.path}
        patcher = mock.patch.dict(os.environ, env)
        patcher.start()
        for name in ('TOKENWARD_TOKEN', 'TOKENWARD_URL', 'TOKENWARD_USERNAME'):
            os.environ.pop(name, None)
        self.addCleanup(patcher.stop)
        self.addCleanup(self.daemon.close)
        self.addCleanup(self.http.close)
        tokenward._warned.clear()

    def open(self, ui, url=None):
        """Opens url with hg's opener; returns (body, what hg printed)."""
        ui.pushbuffer(error=True)
        try:
            body = hgurl.opener(ui).open(url or self.http.url()).read()
        finally:
            printed = ui.popbuffer()
        self.assertNotIn(SECRET.encode(), printed)
        self.assertNotIn(GOOD.encode(), printed)
        return body, printed

    def test_token_from_daemon_is_used_and_approved(self):
        self.daemon.tokens = [('http://127.0.0.1:%d/team' % self.http.server_port, 'alice', GOOD, 'tw_1')]
        body, printed = self.open(make_ui())
        self.assertEqual(body, b'ok')
        self.assertEqual(self.daemon.ops(), ['get', 'approve'])
        get, approve = self.daemon.requests
        self.assertEqual(get['protocol'], 'http')
        self.assertEqual(get['host'], '127.0.0.1:%d' % self.http.server_port)
        self.assertEqual(get['path'], 'team/repo')
        self.assertIsNone(get['username'])
        self.assertEqual((approve['username'], approve['password']), ('alice', GOOD))
        self.assertEqual(printed, b'')

    def test_username_in_url_is_sent(self):
        from mercurial.utils import urlutil

        port = self.http.server_port
        self.daemon.tokens = [('http://127.0.0.1:%d' % port, 'alice', GOOD, 'tw_1')]
        url = b'http://alice@127.0.0.1:%d/team/repo?cmd=capabilities' % port
        plain, authinfo = urlutil.url(url).authinfo()
        ui = make_ui()
        self.assertEqual(hgurl.opener(ui, authinfo).open(plain.decode()).read(), b'ok')
        self.assertEqual(self.daemon.requests[0]['username'], 'alice')
        self.assertEqual(self.daemon.ops(), ['get', 'approve'])

    def test_refused_token_is_rejected_and_hg_falls_back(self):
        port = self.http.server_port
        self.daemon.tokens = [
            ('http://127.0.0.1:%d/team/repo' % port, 'alice', SECRET, 'tw_wrong'),
            ('http://127.0.0.1:%d' % port, 'alice', GOOD, 'tw_right'),
        ]
        auth = {'x.prefix': '127.0.0.1', 'x.schemes': 'http', 'x.username': 'alice', 'x.password': GOOD}
        body, _ = self.open(make_ui(auth))
        self.assertEqual(body, b'ok')
        self.assertEqual(self.daemon.ops(), ['get', 'reject'])  # [auth] answered the second ask
        self.assertEqual(self.daemon.requests[0]['username'], 'alice')
        self.assertEqual(self.daemon.requests[1]['password'], SECRET)
        # the next run gets the right token: the wrong one is rejected now
        body, _ = self.open(make_ui())
        self.assertEqual(self.daemon.ops(), ['get', 'reject', 'get', 'approve'])
        self.assertEqual(self.daemon.requests[3]['password'], GOOD)

    def test_token_refused_later_in_the_same_session_is_rejected(self):
        port = self.http.server_port
        self.daemon.tokens = [('http://127.0.0.1:%d' % port, 'alice', GOOD, 'tw_1')]
        ui = make_ui()
        opener = hgurl.opener(ui)
        self.assertEqual(opener.open(self.http.url()).read(), b'ok')
        self.assertEqual(opener.open(self.http.url()).read(), b'ok')  # no new ask
        self.assertEqual(self.daemon.ops(), ['get', 'approve'])
        self.http.valid = set()  # the token is revoked on the server
        ui.pushbuffer(error=True)
        with self.assertRaises(error.Abort):
            opener.open(self.http.url())
        ui.popbuffer()
        self.assertEqual(self.daemon.ops(), ['get', 'approve', 'reject'])

    def test_token_expiring_soon_warns_without_the_secret(self):
        port = self.http.server_port
        soon = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2))
        expires = soon.strftime('%Y-%m-%dT%H:%M:%SZ')
        cred = {'id': 'tw_9', 'username': 'alice', 'password': GOOD, 'expires': expires}
        self.daemon.answer = lambda r: {'v': 1, 'ok': True, 'credential': cred}
        body, printed = self.open(make_ui())
        self.assertEqual(body, b'ok')
        self.assertEqual(printed, ('tokenward: token tw_9 expires %s\n' % expires).encode())

    def test_refused_token_without_fallback_fails(self):
        port = self.http.server_port
        self.daemon.tokens = [('http://127.0.0.1:%d' % port, 'alice', SECRET, 'tw_wrong')]
        with self.assertRaises(error.Abort):
            self.open(make_ui())
        self.assertEqual(self.daemon.ops(), ['get', 'reject'])

    def test_no_token_falls_back_to_auth_section(self):
        ui = make_ui({'x.prefix': '127.0.0.1', 'x.schemes': 'http', 'x.username': 'carol', 'x.password': 'fromauth'})
        body, printed = self.open(ui)
        self.assertEqual((body, printed), (b'ok', b''))
        self.assertEqual(self.daemon.ops(), ['get'])
        self.assertEqual(self.daemon.requests[0]['username'], 'carol')

    def test_daemon_down_warns_once_and_falls_back(self):
        os.environ['TOKENWARD_SOCKET'] = self.daemon.path + '.missing'
        ui = make_ui({'x.prefix': '127.0.0.1', 'x.schemes': 'http', 'x.username': 'carol', 'x.password': 'fromauth'})
        body, printed = self.open(ui)
        self.assertEqual(body, b'ok')
        self.assertEqual(printed.count(b'\n'), 1, printed)
        self.assertIn(b'tokenward: the daemon is not running', printed)
        self.assertNotIn(b'Traceback', printed)

    def test_daemon_silent_times_out(self):
        self.daemon.silent = True
        ui = make_ui({'x.prefix': '127.0.0.1', 'x.schemes': 'http', 'x.username': 'carol', 'x.password': 'fromauth'})
        with mock.patch.object(tokenward, 'TIMEOUT', 0.3):
            body, printed = self.open(ui)
        self.assertEqual(body, b'ok')
        self.assertIn(b'did not answer', printed)

    def test_ci_mode_never_touches_the_daemon(self):
        port = self.http.server_port
        os.environ.update(
            TOKENWARD_TOKEN=GOOD,
            TOKENWARD_URL='HTTP://127.0.0.1:%d/team/repo.git' % port,
            TOKENWARD_USERNAME='alice',
        )
        body, printed = self.open(make_ui())
        self.assertEqual((body, printed), (b'ok', b''))
        self.assertEqual(self.daemon.requests, [])
        # outside the scope: no answer, hg's own lookup (non-interactive) fails
        with self.assertRaises(error.Abort):
            self.open(make_ui(), self.http.url('other/repo'))
        self.assertEqual(self.daemon.requests, [])

    def test_ci_mode_wrong_token_falls_back(self):
        os.environ.update(
            TOKENWARD_TOKEN=SECRET,
            TOKENWARD_URL='http://127.0.0.1:%d' % self.http.server_port,
            TOKENWARD_USERNAME='alice',
        )
        ui = make_ui({'x.prefix': '127.0.0.1', 'x.schemes': 'http', 'x.username': 'carol', 'x.password': 'fromauth'})
        self.assertEqual(self.open(ui)[0], b'ok')
        self.assertEqual(self.daemon.requests, [])


class Pure(unittest.TestCase):
    def test_socket_path(self):
        self.assertEqual(tokenward.socket_path({'TOKENWARD_SOCKET': '/x/s'}), '/x/s')
        self.assertEqual(
            tokenward.socket_path({'XDG_RUNTIME_DIR': '/run/u'}),
            '/run/u/tokenward/daemon.sock',
        )
        self.assertEqual(
            tokenward.socket_path({}), '/tmp/tokenward-%d/daemon.sock' % os.geteuid()
        )

    def test_split_url(self):
        split = tokenward.split_url
        self.assertEqual(
            split('https://u@Code.Example.com:8443/team/repo/?cmd=batch'),
            ('https', 'Code.Example.com:8443', 'team/repo'),
        )
        self.assertEqual(split('http://h?cmd=capabilities'), ('http', 'h', None))
        self.assertIsNone(split('ssh://h/repo'))
        self.assertIsNone(split('file:///tmp/repo'))

    def test_scope_rules(self):
        m = tokenward.scope_matches
        self.assertTrue(m('https://Code.Example.com', 'https', 'CODE.example.COM:443', None))
        self.assertFalse(m('https://h', 'http', 'h', None))
        self.assertFalse(m('http://h', 'https', 'h', None))
        self.assertFalse(m('https://h', 'https', 'h:8443', None))
        self.assertFalse(m('https://h', 'https', 'h.evil.net', None))
        self.assertTrue(m('http://h:80', 'http', 'h', None))
        self.assertTrue(m('https://h/team', 'https', 'h', 'team/repo.git'))
        self.assertFalse(m('https://h/team', 'https', 'h', 'teamevil/repo'))
        self.assertFalse(m('https://h/team', 'https', 'h', None))
        self.assertTrue(m('https://h/team/repo', 'https', 'h', 'team/repo.git'))
        self.assertTrue(m('https://h/team/repo.git', 'https', 'h', 'team/repo'))
        self.assertFalse(m('https://h/team/repo', 'https', 'h', 'team/repo2'))
        self.assertFalse(m('https://h/team', 'https', 'h', 'team/../other'))
        self.assertTrue(m('http://[::1]:8080', 'http', '[::1]:8080', 'x'))
        for bad in ('h', 'ftp://h', 'https://', 'https://u@h', 'https://h/a?b', 'https://h/../x', 'https://h:0'):
            with self.assertRaises(ValueError, msg=bad):
                m(bad, 'https', 'h', None)

    def test_daemon_errors_are_one_line_without_secrets(self):
        daemon = FakeDaemon()
        self.addCleanup(daemon.close)
        with self.assertRaises(tokenward.DaemonError) as e:
            tokenward.call_daemon({'op': 'reject', 'password': SECRET}, daemon.path + '.x')
        self.assertEqual(str(e.exception), 'the daemon is not running')
        daemon.answer = lambda request: {'v': 1, 'ok': False, 'error': 'vault is locked'}
        with self.assertRaises(tokenward.DaemonError) as e:
            tokenward.call_daemon({'op': 'get'}, daemon.path)
        self.assertEqual(str(e.exception), 'vault is locked')
        self.assertEqual(daemon.requests, [{'op': 'get', 'v': 1}])


if __name__ == '__main__':
    unittest.main()
