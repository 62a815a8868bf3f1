"""The XenAPI module Ansible's community.general xenserver modules import.

Debian ships XenAPI.py inside python3-os-xenapi as os_xenapi.client.XenAPI;
re-export it under the name the modules expect.  Without that package, a
thin stand-in over xmlrpc.client with the same surface (Session, Failure,
xapi_local) is enough for the modules.
"""

try:
    from os_xenapi.client.XenAPI import *  # noqa: F401,F403
    from os_xenapi.client.XenAPI import Failure, Session  # noqa: F401
except ImportError:
    import xmlrpc.client as _xmlrpc

    class Failure(Exception):
        def __init__(self, details):
            super().__init__(details)
            self.details = details

        def __str__(self):
            return str(self.details)

    def _parse(result):
        if not isinstance(result, dict) or "Status" not in result:
            raise Failure(["INTERNAL_ERROR", "malformed reply %r" % result])
        if result["Status"] == "Success":
            return result.get("Value", "")
        raise Failure(result.get("ErrorDescription", []))

    class _Dispatcher:
        def __init__(self, send, name):
            self._send = send
            self._name = name

        def __getattr__(self, name):
            full = name if self._name is None else self._name + "." + name
            return _Dispatcher(self._send, full)

        def __call__(self, *args):
            return self._send(self._name, args)

    class Session(_xmlrpc.ServerProxy):
        def __init__(self, uri, transport=None, encoding=None, verbose=False,
                     allow_none=True, ignore_ssl=False):
            kw = {}
            if ignore_ssl and uri.startswith("https"):
                import ssl
                kw["context"] = ssl._create_unverified_context()
            super().__init__(uri, transport, encoding, verbose, allow_none,
                             **kw)
            self._session = None
            self.last_login_method = None
            self.last_login_params = None
            self.API_version = "1.1"

        def _call(self, name, args):
            if name.startswith("login") or name == "slave_local_login":
                self._session = _parse(getattr(
                    super(), "__getattr__")("session." + name)(*args))
                self.last_login_method = name
                self.last_login_params = args
                return self._session
            if name == "logout":
                return _parse(super().__getattr__("session.logout")(
                    self._session))
            return _parse(super().__getattr__(name)(self._session, *args))

        def __getattr__(self, name):
            if name == "handle":
                return self._session
            if name == "xenapi":
                return _Dispatcher(self._call, None)
            if name.startswith("login") or name == "slave_local_login":
                return lambda *a: self._call(name, a)
            return super().__getattr__(name)

    def xapi_local():
        return Session("http://_var_lib_xcp_xapi/")
