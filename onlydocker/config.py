"""Settings, read in one place: environment first, then the user's config file.

Environment variables (all optional):
  ONLYDOCKER_LOCK                    the lane's lock (default: sources.lock)
  ONLYDOCKER_CACHE                   content-addressed cache (default: ~/.cache/onlydocker)
  ONLYDOCKER_OFFLINE=1               use the cache and downloads folder only
  ONLYDOCKER_DOWNLOADS               folder for hand-placed sources (default: ./downloads)
  ONLYDOCKER_MIRRORS                 space-separated global source mirrors, tried after a
                                     source's own URLs (Buildroot's BR2_BACKUP_SITE)
  ONLYDOCKER_DEBIAN_MIRROR           base URL that `debian:` URLs resolve against
                                     (default: the first Debian mirror in apt's sources)
  ONLYDOCKER_DEBIAN_SECURITY_MIRROR  base URL for `debian-security:` URLs (default: apt's)
  ONLYDOCKER_DEBIAN_ARCHIVE_MIRROR   base URL that `debian-archive:` URLs resolve against
                                     (Debian's old-release archive; no default)
  ONLYDOCKER_DEBIAN_KEYRING          the OpenPGP keyring the mirrors' InRelease files must be
                                     signed by for `doit lock --update` (default: Debian's,
                                     /usr/share/keyrings/debian-archive-keyring.gpg)
  ONLYDOCKER_SIGNING_KEY             the Ed25519 signing key (default: ~/.config/onlydocker/signing.key)
  ONLYDOCKER_SECUREBOOT_KEY          the Secure Boot signing key, RSA (default: secureboot.key
                                     beside the signing key)
  ONLYDOCKER_SECUREBOOT_CERT         its certificate, PEM (default: the key's path, .crt)
  ONLYDOCKER_BOX_BASE_URL            where the Vagrant boxes are published: the catalog
                                     (dist/onlydocker.json) names <base>/<lane>/<box>
                                     (default: a placeholder, https://onlydocker.invalid)
  ONLYDOCKER_CONFIG                  the config file (default: ~/.config/onlydocker/config.toml)
  ONLYDOCKER_OUT                     where lanes' outputs go (default: ./out; out/<lane>/ each)
  ONLYDOCKER_STAGE_CACHE             the stage cache (default: $ONLYDOCKER_CACHE/stages)
  ONLYDOCKER_REBUILD                 stages (comma-separated, or "all") built from scratch and
                                     never cached (`doit repro`'s second build)
  ONLYDOCKER_CLEAN=1                 build every container stage from a fresh extraction: no
                                     kept tree (kept.py) is read or written
  ONLYDOCKER_VARIATION_FILE          a TOML file of conditions inside the build container (the
                                     Variation fields below; `doit repro`'s second build)
  ONLYDOCKER_REMOTE_CACHE            a remote cache in Bazel's HTTP cache protocol (/cas/, /ac/):
                                     bazel-remote, or nginx with WebDAV (remote.py)
  ONLYDOCKER_REMOTE_CACHE_READONLY=1 only download from it (untrusted branches, laptops)
  ONLYDOCKER_REMOTE_CACHE_CA         a CA bundle for its https certificate (default: the system's)
  ONLYDOCKER_REMOTE_CACHE_TIMEOUT    seconds to connect and for each read (default: 5)
  ONLYDOCKER_REMOTE_CACHE_USER, ONLYDOCKER_REMOTE_CACHE_PASSWORD
                                     HTTP basic credentials (default: ~/.netrc, or $NETRC)
  ONLYDOCKER_TRUSTED_KEYS            minisign public keys (base64 lines, or paths of .pub files;
                                     space-separated) whose signed /ac/ entries are used
  ONLYDOCKER_ENGINES                 Docker engines that run container stages side by side:
                                     context names or DOCKER_HOST-style URLs (unix://, tcp://,
                                     ssh://), space-separated (default: the one engine DOCKER_HOST,
                                     DOCKER_CONTEXT or the current context names)

The config file is TOML with the same settings in lower case, e.g.
  mirrors = ["http://cache.local/sources"]
  box_base_url = "https://boxes.example.org/onlydocker"
  engines = ["default", "ssh://builder@big.local"]
  [debian]
  mirror = "http://mirror.local/debian"
  security_mirror = "http://mirror.local/debian-security"
  archive_mirror = "http://mirror.local/debian-archive"
  keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
  [remote_cache]
  url = "https://cache.example.org/onlydocker"
  readonly = true
  ca = "/etc/ssl/certs/team-ca.pem"
  timeout = 5
  trusted_keys = ["RWQ...", "/etc/onlydocker/ci.pub"]
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LOCK = "sources.lock"
DEFAULT_BOX_BASE_URL = "https://onlydocker.invalid"
DEFAULT_REMOTE_TIMEOUT = 5.0
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))

# URL schemes that name a configured mirror rather than a host.
MIRROR_SCHEMES = {
    "debian": "debian_mirror",                    # the main archive
    "debian-security": "debian_security_mirror",  # pool/updates/... of security updates
    "debian-archive": "debian_archive_mirror",    # retired releases (the 2015 lane's jessie)
}


def _xdg(env, var: str, fallback: str) -> Path:
    """An XDG base folder (XDG_CACHE_HOME, XDG_CONFIG_HOME) and its default."""
    return Path(env.get(var) or Path.home() / fallback)


@dataclass(frozen=True)
class Variation:
    """Conditions inside the build container. The default is the canonical
    build; `doit repro` varies every field to prove the outputs ignore them."""
    hostname: str = "onlydocker"
    user: str = "1000:1000"
    tz: str = "UTC"
    locale: str = "C"
    umask: str = "022"
    jobs: int = 0                      # 0: the number of CPUs
    faketime: str | None = None        # e.g. "+400d": shift the clock seen inside

    @property
    def canonical(self) -> bool:
        return self == Variation()

    def to_toml(self) -> str:
        return "".join(f"{k} = {json.dumps(v)}\n" for k, v in dataclasses.asdict(self).items() if v is not None)


def load_variation(path: Path) -> Variation:
    """A Variation from its TOML file, every field checked by its type."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"ONLYDOCKER_VARIATION_FILE {path}: {e}") from None
    fields = {f.name: f for f in dataclasses.fields(Variation)}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"ONLYDOCKER_VARIATION_FILE {path}: unknown key {key!r} "
                              f"(known: {', '.join(fields)})")
        want = int if key == "jobs" else str   # every other field is a string
        if not isinstance(value, want) or isinstance(value, bool):
            raise ConfigError(f"ONLYDOCKER_VARIATION_FILE {path}: {key} must be a {want.__name__}, "
                              f"not {value!r}")
    if "user" in data and not re.fullmatch(r"\d+(:\d+)?", data["user"]):
        raise ConfigError(f"ONLYDOCKER_VARIATION_FILE {path}: user must be uid or uid:gid (numbers), "
                          f"not {data['user']!r}")
    return Variation(**data)


def apt_debian_mirror(paths=APT_SOURCES, suffix: str = "/debian") -> str | None:
    """The first Debian mirror in apt's sources (deb822 or one-line form) whose
    path ends with `suffix` ("/debian", or "/debian-security")."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.glob("*.sources")) + sorted(p.glob("*.list"))
        elif p.is_file():
            files.append(p)
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            uris = re.findall(r"^URIs:\s*(\S+)", text, re.M)
        else:
            uris = re.findall(r"^\s*deb(?:-src)?\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
        for uri in uris:
            if uri.rstrip("/").endswith(suffix):
                return uri.rstrip("/")
    return None


@dataclass(frozen=True)
class RemoteCacheSettings:
    """A remote cache in Bazel's HTTP protocol (see remote.py)."""
    url: str
    readonly: bool = False
    ca_bundle: Path | None = None          # None: the system's CAs
    timeout: float = DEFAULT_REMOTE_TIMEOUT
    user: str | None = None                # None: netrc, if any
    password: str | None = None
    trusted_keys: tuple[str, ...] = ()     # minisign public keys (the base64 line each)


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() not in ("", "0", "no", "false", "off")


def _trusted_keys(items, where: str) -> tuple[str, ...]:
    """Each item a minisign public key's base64 line, or the path of a .pub
    file (its last line is the key). Each key is parsed here, so a bad one
    is one clear error before any build."""
    from .errors import SigningError
    from .sign import parse_public_key
    keys = []
    for item in items:
        text = item
        if not item.startswith("RW") and ("/" in item or item.endswith(".pub")):
            try:
                text = Path(item).read_text()
            except OSError as e:
                raise ConfigError(f"{where}: cannot read the public key file {item}: {e.strerror}") from None
        try:
            parse_public_key(text)
        except SigningError as e:
            raise ConfigError(f"{where}: {item!r}: {e}") from None
        keys.append([l for l in text.splitlines() if l.strip()][-1].strip())
    return tuple(keys)


def _remote(env, cfg: dict, cfg_path: Path) -> RemoteCacheSettings | None:
    rc = cfg.get("remote_cache", {})
    if not isinstance(rc, dict):
        raise ConfigError(f"{cfg_path}: [remote_cache] must be a table")
    url = env.get("ONLYDOCKER_REMOTE_CACHE") or rc.get("url")
    if not url:
        return None
    where = "ONLYDOCKER_REMOTE_CACHE" if env.get("ONLYDOCKER_REMOTE_CACHE") else f"{cfg_path}: remote_cache.url"
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ConfigError(f"{where}: expected an http:// or https:// URL, got {url!r}")
    timeout = env.get("ONLYDOCKER_REMOTE_CACHE_TIMEOUT") or rc.get("timeout") or DEFAULT_REMOTE_TIMEOUT
    try:
        timeout = float(timeout)
        if not 0 < timeout <= 600:
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"ONLYDOCKER_REMOTE_CACHE_TIMEOUT: expected seconds (0 < t <= 600), got {timeout!r}") from None
    ca = env.get("ONLYDOCKER_REMOTE_CACHE_CA") or rc.get("ca")
    if ca and not Path(ca).is_file():
        raise ConfigError(f"ONLYDOCKER_REMOTE_CACHE_CA: no such CA bundle {ca}")
    keys_env = env.get("ONLYDOCKER_TRUSTED_KEYS")
    if keys_env is not None:
        keys = _trusted_keys(keys_env.split(), "ONLYDOCKER_TRUSTED_KEYS")
    else:
        keys = _trusted_keys(rc.get("trusted_keys", ()), f"{cfg_path}: remote_cache.trusted_keys")
    readonly = env.get("ONLYDOCKER_REMOTE_CACHE_READONLY")
    return RemoteCacheSettings(
        url=url.rstrip("/"),
        readonly=_flag(readonly) if readonly is not None else _flag(rc.get("readonly", False)),
        ca_bundle=Path(ca) if ca else None,
        timeout=timeout,
        user=env.get("ONLYDOCKER_REMOTE_CACHE_USER") or rc.get("user"),
        password=env.get("ONLYDOCKER_REMOTE_CACHE_PASSWORD"),
        trusted_keys=keys,
    )


@dataclass(frozen=True)
class Settings:
    """Every setting, as `load` reads it (tests may make one directly)."""
    root: Path
    lock_path: Path
    cache_dir: Path
    downloads_dir: Path
    signing_key: Path
    offline: bool = False
    source_mirrors: tuple[str, ...] = ()
    debian_mirror: str | None = None
    debian_security_mirror: str | None = None
    debian_archive_mirror: str | None = None
    out_dir: Path | None = None            # None: root/out
    stage_cache_dir: Path | None = None    # None: cache_dir/stages
    rebuild: frozenset[str] = frozenset()
    clean: bool = False                    # no kept trees (ONLYDOCKER_CLEAN=1)
    variation: Variation = Variation()
    secureboot_key_path: Path | None = None    # None: secureboot.key beside signing_key
    secureboot_cert_path: Path | None = None   # None: the key's path with .crt

    @property
    def secureboot_key(self) -> Path:
        return self.secureboot_key_path or self.signing_key.with_name("secureboot.key")

    @property
    def secureboot_cert(self) -> Path:
        return self.secureboot_cert_path or self.secureboot_key.with_suffix(".crt")

    @property
    def out_root(self) -> Path:
        return self.out_dir or self.root / "out"

    @property
    def stage_cache(self) -> Path:
        return self.stage_cache_dir or self.cache_dir / "stages"
    box_base_url: str = DEFAULT_BOX_BASE_URL
    remote: RemoteCacheSettings | None = None     # None: no remote cache
    engines: tuple[str, ...] = ()                  # (): the one engine the Docker settings name
    debian_keyring: Path | None = None             # None: Debian's archive keyring (lockupdate.py)

    def mirror_for(self, scheme: str) -> str:
        """Base URL for a mirror scheme such as `debian:`; a clear error if unset."""
        attr = MIRROR_SCHEMES.get(scheme)
        if attr is None:
            raise ConfigError(f"unknown mirror scheme {scheme!r}: known are {sorted(MIRROR_SCHEMES)}")
        value = getattr(self, attr)
        if not value:
            env = "ONLYDOCKER_" + attr.upper()
            raise ConfigError(f"no mirror configured for {scheme}: URLs; set {env} "
                              f"(or [debian] in the config file)")
        return value.rstrip("/")


def load(lock: str | os.PathLike | None = None, env=None, root: Path = PROJECT_ROOT) -> Settings:
    """Read settings from the environment and the user's config file."""
    env = os.environ if env is None else env
    config_home = _xdg(env, "XDG_CONFIG_HOME", ".config") / "onlydocker"
    cfg_path = Path(env.get("ONLYDOCKER_CONFIG") or config_home / "config.toml")
    cfg: dict = {}
    if cfg_path.is_file():
        try:
            cfg = tomllib.loads(cfg_path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{cfg_path}: not valid TOML: {e}") from None
    deb = cfg.get("debian", {})

    lock_path = Path(lock or env.get("ONLYDOCKER_LOCK") or cfg.get("lock") or DEFAULT_LOCK)
    if not lock_path.is_absolute():
        lock_path = (Path.cwd() / lock_path) if lock else root / lock_path
    cache = env.get("ONLYDOCKER_CACHE") or cfg.get("cache")
    cache_dir = Path(cache) if cache else _xdg(env, "XDG_CACHE_HOME", ".cache") / "onlydocker"
    mirrors = env.get("ONLYDOCKER_MIRRORS")
    source_mirrors = tuple(mirrors.split()) if mirrors is not None else tuple(cfg.get("mirrors", ()))
    key = env.get("ONLYDOCKER_SIGNING_KEY") or cfg.get("signing_key")
    box_base_url = env.get("ONLYDOCKER_BOX_BASE_URL") or cfg.get("box_base_url") or DEFAULT_BOX_BASE_URL
    if not re.fullmatch(r"(https?|file)://\S+", box_base_url):
        where = "ONLYDOCKER_BOX_BASE_URL" if env.get("ONLYDOCKER_BOX_BASE_URL") else f"{cfg_path}: box_base_url"
        raise ConfigError(f"{where}: expected an http://, https:// or file:// URL, got {box_base_url!r}")
    return Settings(
        root=root,
        lock_path=lock_path,
        cache_dir=cache_dir.resolve(),
        downloads_dir=Path(env.get("ONLYDOCKER_DOWNLOADS") or cfg.get("downloads") or root / "downloads"),
        offline=_flag(env["ONLYDOCKER_OFFLINE"]) if env.get("ONLYDOCKER_OFFLINE") else _flag(cfg.get("offline", False)),
        source_mirrors=source_mirrors,
        debian_mirror=env.get("ONLYDOCKER_DEBIAN_MIRROR") or deb.get("mirror") or apt_debian_mirror(),
        debian_security_mirror=env.get("ONLYDOCKER_DEBIAN_SECURITY_MIRROR") or deb.get("security_mirror")
        or apt_debian_mirror(suffix="/debian-security"),
        debian_archive_mirror=env.get("ONLYDOCKER_DEBIAN_ARCHIVE_MIRROR") or deb.get("archive_mirror"),
        signing_key=Path(key) if key else config_home / "signing.key",
        secureboot_key_path=Path(env["ONLYDOCKER_SECUREBOOT_KEY"]) if env.get("ONLYDOCKER_SECUREBOOT_KEY") else None,
        secureboot_cert_path=Path(env["ONLYDOCKER_SECUREBOOT_CERT"]) if env.get("ONLYDOCKER_SECUREBOOT_CERT")
        else None,
        out_dir=Path(env["ONLYDOCKER_OUT"]) if env.get("ONLYDOCKER_OUT") else None,
        stage_cache_dir=Path(env["ONLYDOCKER_STAGE_CACHE"]) if env.get("ONLYDOCKER_STAGE_CACHE") else None,
        rebuild=frozenset(filter(None, env.get("ONLYDOCKER_REBUILD", "").split(","))),
        clean=_flag(env.get("ONLYDOCKER_CLEAN", "")),
        variation=load_variation(Path(env["ONLYDOCKER_VARIATION_FILE"])) if env.get("ONLYDOCKER_VARIATION_FILE")
        else Variation(),
        box_base_url=box_base_url.rstrip("/"),
        remote=_remote(env, cfg, cfg_path),
        engines=tuple(env["ONLYDOCKER_ENGINES"].split()) if env.get("ONLYDOCKER_ENGINES") is not None
        else tuple(cfg.get("engines", ())),
        debian_keyring=Path(env.get("ONLYDOCKER_DEBIAN_KEYRING") or deb["keyring"])
        if env.get("ONLYDOCKER_DEBIAN_KEYRING") or deb.get("keyring") else None,
    )
