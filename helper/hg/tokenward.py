"""hand scoped access tokens from tokenward to hg over HTTP(S)

This file owns tokenward's Mercurial extension (hg 6.x and 7.x, Python 3,
nothing beyond hg and the standard library). ``tokenward setup hg`` enables
it with ``[extensions] tokenward = /path/to/tokenward.py``.

When an http(s) server answers 401, hg asks its password manager
(``mercurial.url.passwordmgr.find_user_password``) for credentials. This
extension answers first:

* It asks the tokenward daemon over its unix socket (``$TOKENWARD_SOCKET``,
  else ``$XDG_RUNTIME_DIR/tokenward/daemon.sock``, else
  ``/tmp/tokenward-$UID/daemon.sock``) with one JSON line::

    {"v":1,"op":"get","protocol":"https","host":"code.example.com",
     "path":"team/repo","username":null}

  and gives hg the token's (username, password). The username is the one in
  the URL or in ``[auth]``, when hg has one. A token that expires within 7
  days gets a warning line. The extension never starts the daemon.
* When the daemon has no token, cannot be reached within a few seconds or
  answers an error, hg's own lookup runs as if the extension were not there
  (the password in the URL, ``[auth]``, then the prompt). Nothing is raised;
  at most one warning line is printed per hg process.
* A 401 to a token handed out here shows up as hg asking again for the same
  realm and URL. That token is then reported with ``reject`` (the daemon
  marks it rejected and stops offering it) and this second ask goes to hg's
  own lookup.
* Success is reported with ``approve`` (the daemon records last_used): the
  extension also wraps urllib's Basic and Digest retry methods, and when the
  request retried with our token comes back without an error (the header it
  carried being ours), the token worked. hg then sends that Basic header
  with every later request unasked, so there is one report per hg opener,
  and a later ask for the same realm and URL can only mean a refusal (a
  token revoked mid-command is rejected too).

CI mode: when ``TOKENWARD_TOKEN`` is set the daemon is never contacted. The
token is given for URLs inside ``TOKENWARD_URL`` (required; matched exactly
as a token's scope: same scheme, host equal ignoring case with default ports,
a whole-component path prefix where ``repo`` and ``repo.git`` are the same),
with ``TOKENWARD_USERNAME`` or else the username hg has. Nothing is reported.

No secret is ever printed: debug lines name the token's id, the host and the
path, never the token.
"""

import base64
import datetime
import hmac
import json
import os
import socket
import urllib.parse

testedwith = b'6.3 7.2'
minimumhgversion = b'6.0'

TIMEOUT = 3.0  # seconds for connecting, and for each read or write
MAX_ANSWER = 4 * 1024 * 1024

_warned = []  # one warning per process is enough


class DaemonError(Exception):
    """The daemon could not be asked or answered an error (no secret inside)."""


def socket_path(env=os.environ):
    if env.get('TOKENWARD_SOCKET'):
        return env['TOKENWARD_SOCKET']
    if env.get('XDG_RUNTIME_DIR'):
        return os.path.join(env['XDG_RUNTIME_DIR'], 'tokenward', 'daemon.sock')
    tmp = env.get('TMPDIR') or '/tmp'
    return os.path.join(tmp, 'tokenward-%d' % os.geteuid(), 'daemon.sock')


def call_daemon(request, path=None, timeout=TIMEOUT):
    """Sends one request, returns the decoded ``ok`` answer."""
    line = json.dumps(dict(request, v=1), separators=(',', ':')).encode()
    answer = bytearray()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path or socket_path())
            s.sendall(line + b'\n')
            while not answer.endswith(b'\n'):
                chunk = s.recv(65536)
                if not chunk or len(answer) + len(chunk) > MAX_ANSWER:
                    raise DaemonError('the daemon gave an unreadable answer')
                answer += chunk
    except socket.timeout:
        raise DaemonError('the daemon did not answer within %gs' % timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonError('the daemon is not running')
    except OSError as e:
        raise DaemonError('cannot reach the daemon: %s' % e.strerror)
    try:
        decoded = json.loads(bytes(answer))
    except ValueError:
        raise DaemonError('the daemon gave an unreadable answer')
    if not isinstance(decoded, dict) or not decoded.get('ok'):
        error = decoded.get('error') if isinstance(decoded, dict) else None
        raise DaemonError(str(error or 'the daemon refused the request'))
    return decoded


def split_url(url):
    """(protocol, host[:port], path or None) of an http(s) URL, else None."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return None
    protocol = parts.scheme.lower()
    host = parts.netloc.rpartition('@')[2]
    if protocol not in ('http', 'https') or not host:
        return None
    return protocol, host, parts.path.strip('/') or None


def _host_port(hostport, protocol):
    """(lower-cased host, port) with the scheme's default port filled in."""
    if hostport.startswith('['):
        host, _, rest = hostport[1:].partition(']')
        port = rest[1:] if rest.startswith(':') else rest
    elif ':' in hostport:
        host, _, port = hostport.rpartition(':')
    else:
        host, port = hostport, ''
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ValueError('bad host')
    default = 443 if protocol == 'https' else 80
    return host.lower(), int(port) if port else default


def _components(path):
    parts = [p for p in (path or '').split('/') if p]
    if any(p in ('.', '..') for p in parts):
        raise ValueError('dot segments')
    return parts


def _same_component(a, b):
    return (a[:-4] if a.endswith('.git') else a) == (
        b[:-4] if b.endswith('.git') else b
    )


def scope_matches(scope_url, protocol, hostport, path):
    """Whether a request falls inside a token's scope (the daemon's rules).

    Raises ValueError when ``scope_url`` is not a valid scope."""
    scope = urllib.parse.urlsplit(scope_url)
    scheme = scope.scheme.lower()
    if scheme not in ('http', 'https'):
        raise ValueError('the scheme must be http or https')
    if scope.query or scope.fragment or '@' in scope.netloc:
        raise ValueError('a scope has no user, query or fragment')
    where, mine = _host_port(scope.netloc, scheme), _components(scope.path)
    try:
        there, theirs = _host_port(hostport, protocol), _components(path)
    except ValueError:
        return False
    return (
        scheme == protocol
        and where == there
        and len(mine) <= len(theirs)
        and all(_same_component(a, b) for a, b in zip(mine, theirs))
    )


def _text(value):
    return value.decode('utf-8', 'replace') if isinstance(value, bytes) else value


def _bytes(text):
    return text.encode('utf-8', 'backslashreplace')


def _warn_once(ui, message):
    if not _warned:
        _warned.append(True)
        ui.warn(_bytes('tokenward: %s\n' % message))
    else:
        ui.debug(_bytes('tokenward: %s\n' % message))


class Handed:
    """A credential given to hg for one (realm, URL), and what became of it."""

    def __init__(self, parts, username, password, token_id, ci):
        self.parts, self.username, self.password = parts, username, password
        self.token_id, self.ci = token_id, ci
        self.pending = True  # given, neither accepted nor refused yet
        self.approved = False
        self.basic = False  # accepted with Basic: hg now sends it unasked

    def authorization(self):
        raw = ('%s:%s' % (self.username, self.password)).encode('utf-8')
        return 'Basic ' + base64.b64encode(raw).decode('ascii')

    def report(self, ui, op):
        if self.ci:
            return
        protocol, host, path = self.parts
        request = {
            'op': op,
            'protocol': protocol,
            'host': host,
            'path': path,
            'username': self.username,
            'password': self.password,
        }
        try:
            call_daemon(request)
            ui.debug(_bytes('tokenward: %s %s\n' % (op, self.token_id)))
        except DaemonError as e:
            _warn_once(ui, 'could not report %s of %s: %s' % (op, self.token_id, e))


FELL_BACK = 'hg'  # hg's own lookup answers for this (realm, URL)


def lookup(ui, parts, username):
    """(username, password, token id) from CI mode or the daemon, or None."""
    protocol, host, path = parts
    env = os.environ
    if env.get('TOKENWARD_TOKEN'):
        scope = env.get('TOKENWARD_URL')
        if not scope:
            _warn_once(ui, 'TOKENWARD_TOKEN is set but TOKENWARD_URL is not')
            return None
        try:
            if not scope_matches(scope, protocol, host, path):
                return None
        except ValueError as e:
            _warn_once(ui, 'TOKENWARD_URL is not a valid scope: %s' % e)
            return None
        username = env.get('TOKENWARD_USERNAME') or username
        if not username:
            _warn_once(ui, 'set TOKENWARD_USERNAME (the URL names no user)')
            return None
        return username, env['TOKENWARD_TOKEN'], 'TOKENWARD_TOKEN'
    request = {
        'op': 'get',
        'protocol': protocol,
        'host': host,
        'path': path,
        'username': username,
    }
    try:
        credential = call_daemon(request).get('credential')
    except DaemonError as e:
        _warn_once(ui, '%s; using hg\'s own credentials' % e)
        return None
    if not isinstance(credential, dict) or not credential.get('password'):
        return None
    username = credential.get('username') or username
    if not username:
        return None
    token_id = str(credential.get('id'))
    _warn_if_expiring(ui, token_id, credential.get('expires'))
    return username, credential['password'], token_id


def _warn_if_expiring(ui, token_id, expires):
    try:
        when = datetime.datetime.fromisoformat(expires.replace('Z', '+00:00'))
    except (AttributeError, ValueError):
        return
    left = when - datetime.datetime.now(datetime.timezone.utc)
    if left < datetime.timedelta(days=7):
        ui.warn(_bytes('tokenward: token %s expires %s\n' % (token_id, expires)))


def _state(passwordmgr):
    return passwordmgr.__dict__.setdefault('_tokenward', {})


def _base(url):
    return urllib.parse.urlsplit(url)._replace(query='', fragment='').geturl()


def find_user_password(orig, self, realm, authuri):
    user, passwd = self.passwddb.find_user_password(realm, authuri)
    parts = split_url(authuri)
    if passwd or parts is None:
        return orig(self, realm, authuri)  # a password in the URL wins
    key = (realm, _base(authuri))
    state = _state(self)
    handed = state.get(key)
    if handed is FELL_BACK:
        return orig(self, realm, authuri)
    if handed is not None and (handed.pending or handed.basic):
        # Asked again for the same realm and URL: the server refused what we
        # gave (hg sends an accepted Basic header on every later request, so
        # a new ask means it was refused; Digest asks on every request).
        self.ui.debug(_bytes('tokenward: %s was refused\n' % handed.token_id))
        handed.report(self.ui, 'reject')
        state[key] = FELL_BACK
        return orig(self, realm, authuri)
    if handed is None:
        if not user:
            from mercurial import httpconnection

            found = httpconnection.readauthforuri(self.ui, authuri, user)
            user = found and found[1].get(b'username')
        try:
            answer = lookup(self.ui, parts, _text(user) or None)
        except Exception as e:  # never a traceback instead of hg's own lookup
            _warn_once(self.ui, 'internal error (%s); using hg\'s own credentials' % type(e).__name__)
            answer = None
        if answer is None:
            state[key] = FELL_BACK
            return orig(self, realm, authuri)
        ci = bool(os.environ.get('TOKENWARD_TOKEN'))
        handed = state[key] = Handed(parts, answer[0], answer[1], answer[2], ci)
        where = '%s://%s/%s' % (parts[0], parts[1], parts[2] or '')
        self.ui.debug(_bytes('tokenward: using %s for %s\n' % (handed.token_id, where)))
    handed.pending = True  # also when an accepted Digest token is asked again
    return handed.username, handed.password


def _retry(orig, self, *args):
    """Wraps urllib's retry with credentials: a good answer approves them."""
    response = orig(self, *args)
    request = next((a for a in args if hasattr(a, 'get_full_url')), None)
    if response is None or request is None:
        return response
    if (getattr(response, 'status', None) or getattr(response, 'code', 200)) >= 400:
        return response
    base = _base(request.get_full_url())
    sent = request.get_header('Authorization', None) or ''
    for (_, url), handed in list(_state(self.passwd).items()):
        if url != base or handed is FELL_BACK or not handed.pending:
            continue
        basic = sent.startswith('Basic ')
        if basic and not hmac.compare_digest(sent, handed.authorization()):
            continue
        handed.pending, handed.basic = False, basic
        if not handed.approved:
            handed.approved = True
            handed.report(self.passwd.ui, 'approve')
    return response


def extsetup(ui):
    from mercurial import extensions, url

    extensions.wrapfunction(url.passwordmgr, 'find_user_password', find_user_password)
    extensions.wrapfunction(url.httpbasicauthhandler, 'retry_http_basic_auth', _retry)
    extensions.wrapfunction(url.httpdigestauthhandler, 'retry_http_digest_auth', _retry)
