"""``vdsm-tool``: prepare this host for the agent, check it, register it with an engine.

    vdsm-tool configure [--module libvirt|identity]...   # idempotent; says what it changed
    vdsm-tool is-configured [--module ...]               # exit 0, or 1 listing what is missing
    vdsm-tool register --engine tcp://ENGINE:PORT [--engine-fingerprint SHA256:...]

``--config FILE`` is vdsmd's TOML file (the key paths, the state dir, the API endpoint);
``--state-dir`` overrides the state dir as vdsmd's flag does. Exit statuses: 0 done, 1
failed or not configured, 2 usage, 3 registration pending (not approved yet), 4 the engine
refused the registration.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from actors import config as configuration
from actors.tool import identity, libvirtconf
from actors.tool.register import Request, default_hostname, register
from messaging.errors import RegistrationError, RegistrationPending, RegistrationRefused

MODULES = ("libvirt", "identity")
EXIT_PENDING, EXIT_REFUSED = 3, 4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vdsm-tool", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="docs/registration.md describes registration")
    parser.add_argument("--config", type=Path, help="vdsmd's TOML configuration file")
    parser.add_argument("--state-dir", type=Path, help="the agent's state directory")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("configure", "prepare what is missing (idempotent)"),
                       ("is-configured", "exit 0 if nothing is missing, else 1")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--module", action="append", choices=MODULES,
                         help="only this part (repeatable; default: all)")
    reg = sub.add_parser("register", help="announce this host to an engine")
    reg.add_argument("--engine", required=True, help="the engine's tcp://HOST:PORT")
    reg.add_argument("--engine-fingerprint", help="SHA256:<hex> the engine's key must have")
    reg.add_argument("--api", help="the API endpoint to announce (default: the config's)")
    reg.add_argument("--hostname", default=None, help="the name to announce")
    reg.add_argument("--timeout", type=float, default=10.0, help="seconds per exchange")
    reg.add_argument("--wait", type=float, default=0.0,
                     help="seconds to keep asking while the engine has not approved")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> configuration.Config:
    config = configuration.load(args.config)
    return configuration.with_overrides(
        config, daemon={"state_dir": args.state_dir},
        api={"endpoint": getattr(args, "api", None)})


def _modules(args: argparse.Namespace) -> list[str]:
    return list(dict.fromkeys(args.module or MODULES))


def configure(config: configuration.Config, modules: list[str]) -> int:
    if "libvirt" in modules and os.geteuid() != 0:
        print("vdsm-tool: configuring libvirt needs root", file=sys.stderr)
        return 1
    changed: list[str] = []
    if "libvirt" in modules:
        changed += libvirtconf.ensure(libvirtconf.LibvirtSetup())
    if "identity" in modules:
        changed += identity.ensure(identity.Identity.of(config))
    for line in changed:
        print(f"configured: {line}")
    if not changed:
        print("nothing to configure")
    return is_configured(config, modules, quiet=True)


def is_configured(config: configuration.Config, modules: list[str], *,
                  quiet: bool = False) -> int:
    missing: list[str] = []
    if "libvirt" in modules:
        missing += libvirtconf.problems(libvirtconf.LibvirtSetup())
    if "identity" in modules:
        missing += identity.problems(identity.Identity.of(config))
    for line in missing:
        print(f"missing: {line}", file=sys.stderr)
    if not missing and not quiet:
        print(f"configured ({', '.join(modules)})")
    return 1 if missing else 0


def do_register(config: configuration.Config, args: argparse.Namespace) -> int:
    request = Request(engine=args.engine, identity=identity.Identity.of(config),
                      api_endpoint=config.api_endpoint, curve_enabled=config.curve.enabled,
                      hostname=args.hostname or default_hostname(),
                      fingerprint=args.engine_fingerprint, timeout=args.timeout,
                      wait=args.wait)
    try:
        path = register(request, lambda line: print(line, flush=True))
    except RegistrationPending as e:
        print(f"vdsm-tool: {e.message}", file=sys.stderr)
        return EXIT_PENDING
    except RegistrationRefused as e:
        print(f"vdsm-tool: {e.message}", file=sys.stderr)
        return EXIT_REFUSED
    except RegistrationError as e:
        print(f"vdsm-tool: {e.message} (error {e.code})", file=sys.stderr)
        return 1
    print(f"approved: the engine's key is authorised ({path}); vdsmd re-reads its keys "
          f"within [curve] reload_interval ({config.curve.reload_interval:g} s) or on SIGHUP")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = _config(args)
        if args.command == "register":
            return do_register(config, args)
        modules = _modules(args)
        if args.command == "configure":
            return configure(config, modules)
        return is_configured(config, modules)
    except (configuration.ConfigError, ValueError, OSError, RuntimeError,
            subprocess.SubprocessError) as e:
        print(f"vdsm-tool: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
