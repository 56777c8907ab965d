"""Redis URLs: one server, a master found through Sentinel, or a Redis Cluster.

- `redis://`, `rediss://`, `unix://`: one server, as redis-py reads them.
- `redis+sentinel://[user:password@]host:port[,host:port...]/<master-name>[/db][?options]`
  (`rediss+sentinel://` for TLS): the hosts are sentinels; the user and password are the
  master's. The sentinels' own credentials, when they have any, are the query options
  `sentinel_username` and `sentinel_password`.
- `redis+cluster://[user:password@]host:port[,host:port...][?options]`
  (`rediss+cluster://` for TLS): the hosts are seed nodes; the client learns the rest.

Other query options are redis-py's connection options (`ssl_ca_certs`, `ssl_cert_reqs`,
`socket_timeout`, ...) and apply to every connection, the sentinels' included. Nothing here
quotes any part of a URL in an error: URLs carry passwords.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode

from redis.asyncio.connection import parse_url

SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = (*SINGLE_SCHEMES, *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)

SENTINEL_PORT = 26379
CLUSTER_PORT = 6379
SENTINEL_SECRETS = ("sentinel_password",)
"""Query options that hold a secret, like the password in the user part."""
SENTINEL_OPTIONS = ("sentinel_username", *SENTINEL_SECRETS)

EXAMPLES = (
    "write it as redis://[user:password@]host:6379/0 (rediss:// for TLS, unix:///path/to/socket),"
    " redis+sentinel://host:26379,host:26379/<master-name>/0 or"
    " redis+cluster://host:6379,host:6379 (rediss+sentinel://, rediss+cluster:// for TLS)"
)


@dataclasses.dataclass(frozen=True)
class RedisTarget:
    """What a Sentinel or Cluster URL names, as redis-py's constructors take it."""

    kind: Literal["sentinel", "cluster"]
    hosts: tuple[tuple[str, int], ...]
    """Sentinels, or the cluster's seed nodes."""
    options: dict[str, Any]
    """Connection options of the data nodes (user, password, TLS, timeouts, db)."""
    master_name: str = ""
    sentinel_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Connection options of the sentinels themselves."""


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-case ("" when it has none)."""
    return url.partition("://")[0].lower() if "://" in url else ""


def is_cluster(url: str) -> bool:
    """A Redis Cluster URL: every multi-key command and script must keep to one hash slot."""
    return scheme_of(url) in CLUSTER_SCHEMES


def is_multi_host(url: str) -> bool:
    """A Sentinel or Cluster URL (several hosts, parsed here rather than by redis-py)."""
    return scheme_of(url) in (*SENTINEL_SCHEMES, *CLUSTER_SCHEMES)


_BAD_PORT = (
    "the text after a host is not a port number; percent-encode '/', '?', '#', '@' and ':'"
    " in the user name and password (e.g. '/' as '%2F')"
)


def _hosts(text: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for n, raw in enumerate(text.split(","), start=1):
        item = raw.strip()
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port_text = rest.removeprefix(":")
        else:
            host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"host {n} of the URL's host list is empty")
        if port_text and not port_text.isdigit():
            raise ValueError(f"host {n} of the URL's host list: {_BAD_PORT}")
        port = int(port_text) if port_text else default_port
        if not 0 < port < 65536:
            raise ValueError(f"host {n} of the URL's host list has a port out of range")
        hosts.append((unquote(host), port))
    return tuple(hosts)


def parse(url: str) -> RedisTarget:
    """Split a `redis+sentinel://` or `redis+cluster://` URL; ValueError quoting none of it."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in (*SENTINEL_SCHEMES, *CLUSTER_SCHEMES):
        raise ValueError(f"not a Sentinel or Cluster URL: {EXAMPLES}")
    tls = scheme.startswith("rediss")
    sentinel = scheme in SENTINEL_SCHEMES
    rest, _, _fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, host_text = netloc.rpartition("@")
    hosts = _hosts(host_text, SENTINEL_PORT if sentinel else CLUSTER_PORT)
    pairs = parse_qsl(query, keep_blank_values=True)
    sentinel_only = {k: v for k, v in pairs if k in SENTINEL_OPTIONS}
    common = [(k, v) for k, v in pairs if k not in SENTINEL_OPTIONS]
    if sentinel_only and not sentinel:
        raise ValueError("sentinel_username and sentinel_password belong in redis+sentinel:// URLs")
    parts = [unquote(p) for p in path.split("/")] if slash else []
    parts = [p for p in parts if p]
    master_name, db = "", 0
    if sentinel:
        if not parts:
            raise ValueError(
                "a redis+sentinel:// URL names the master after the hosts:"
                " redis+sentinel://host:26379/<master-name>/0"
            )
        master_name, parts = parts[0], parts[1:]
    if len(parts) > 1 or (parts and not parts[0].isdigit()):
        raise ValueError("the URL's path must be /<master-name>[/db] (Sentinel) or empty (Cluster)")
    db = int(parts[0]) if parts else 0
    if not sentinel and db:
        raise ValueError("Redis Cluster has only database 0: leave the path out or write /0")
    # redis-py reads the user, password and query options of a one-host URL the same way on
    # every client: hand it one, built from the parts that apply to the data nodes.
    first_host, first_port = hosts[0]
    host_part = f"[{first_host}]" if ":" in first_host else first_host
    single = f"{'rediss' if tls else 'redis'}://{userinfo}{at}{host_part}:{first_port}/{db}"
    if common:
        single += "?" + urlencode(common)
    options: dict[str, Any] = dict(parse_url(single))
    for key in ("host", "port", "connection_class"):
        options.pop(key, None)
    if tls:
        options["ssl"] = True
    if not sentinel:
        options.pop("db", None)
    sentinel_options: dict[str, Any] = {}
    if sentinel:
        sentinel_options = {
            k: v for k, v in options.items() if k.startswith(("socket_", "ssl")) or k == "protocol"
        }
        if "sentinel_username" in sentinel_only:
            sentinel_options["username"] = sentinel_only["sentinel_username"]
        if "sentinel_password" in sentinel_only:
            sentinel_options["password"] = sentinel_only["sentinel_password"]
    return RedisTarget(
        kind="sentinel" if sentinel else "cluster",
        hosts=hosts,
        options=options,
        master_name=master_name,
        sentinel_options=sentinel_options,
    )


def has_credentials(url: str) -> bool:
    """True when `url` carries a user or a password anywhere: in the user part (of any form),
    or as a query option (`password`, `username`, `sentinel_password`, `sentinel_username`)."""
    rest = url.partition("://")[2].partition("#")[0]
    rest, _, query = rest.partition("?")
    netloc = rest.partition("/")[0]
    named = ("username", "password", *SENTINEL_OPTIONS)
    return "@" in netloc or any(k in named for k, _ in parse_qsl(query))


def redacted(url: str) -> str:
    """`url` with every password (the user part's, the sentinels') replaced by `***`."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, hash_, fragment = rest.partition("#")
    rest, q, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        secret = ("password", *SENTINEL_SECRETS)
        query = urlencode([(k, "***" if k in secret else v) for k, v in pairs], safe="*")
    return f"{scheme}{sep}{userinfo}{at}{hosts}{slash}{path}{q}{query}{hash_}{fragment}"
