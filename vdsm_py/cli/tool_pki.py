"""``vdsm-tool pki``: create a CA, issue and inspect certificates, enrol with a CSR.

Subcommands:

- ``create-ca --dir CADIR``: a new CA (``cacert.pem``, ``private/cakey.pem``).
- ``issue --dir DIR --ca-dir CADIR --name HOST --ip IP [--client]``: a key and certificate
  signed by the CA, installed in VDSM's layout under DIR (with the CA certificate).
- ``show --dir DIR`` (an identity or a CA directory) or ``show --cert FILE``: subject,
  issuer, SANs, usages, expiry and days left; for a directory also the full check.
- ``csr --dir DIR --name HOST --ip IP``: make (or reuse) DIR's key, print a CSR.
- ``sign --ca-dir CADIR --csr FILE``: sign a CSR, print the certificate.
- ``install --dir DIR --cert FILE --cacert FILE``: check a signed certificate against DIR's
  key and the CA, then install both.

Exit codes: 0 success; 1 a PKI problem (missing, unreadable or invalid file, expired
certificate, refusing to overwrite); 2 bad command-line usage. Nothing is overwritten
without ``--force``. This module only parses arguments and prints; the work is done in
:mod:`vdsm_py.pki`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from vdsm_py.pki import store
from vdsm_py.pki.check import check_identity, check_key_matches, check_signed_by, check_validity
from vdsm_py.pki.info import CertInfo, describe
from vdsm_py.pki.issue import (
    CA_DAYS,
    CERT_DAYS,
    create_ca,
    issue_cert,
    load_ca,
    make_csr,
    new_key,
    sign_csr,
    write_ca,
    write_identity,
)
from vdsm_py.pki.layout import CaPaths, PkiPaths
from vdsm_py.pki.store import PkiError

EXIT_OK = 0
EXIT_PROBLEM = 1


class _Refused(Exception):
    """The command would overwrite something or cannot do what was asked."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    pki = sub.add_parser("pki", help="create a CA, issue, inspect and enrol certificates")
    tasks = pki.add_subparsers(dest="pki_task", required=True, metavar="ACTION")

    p = tasks.add_parser("create-ca", help="create a certificate authority in a directory")
    p.add_argument("--dir", type=Path, required=True, help="CA directory to create")
    p.add_argument("--cn", default="vdsm_py CA", help="CA common name (default %(default)s)")
    p.add_argument("--days", type=int, default=CA_DAYS, help="validity (default %(default)s)")
    _key_type(p)
    _force(p)
    p.set_defaults(func=_guard(run_create_ca))

    p = tasks.add_parser("issue", help="issue a host (or client) certificate in VDSM's layout")
    p.add_argument("--dir", type=Path, required=True, help="PKI directory to write (VDSM layout)")
    p.add_argument("--ca-dir", type=Path, required=True, help="CA directory (from create-ca)")
    _names(p)
    p.add_argument(
        "--client",
        action="store_true",
        help="client-only certificate (clientAuth); default is a host certificate "
        "valid as server and client, as VDSM uses it",
    )
    p.add_argument("--days", type=int, default=CERT_DAYS, help="validity (default %(default)s)")
    _key_type(p)
    _force(p)
    p.set_defaults(func=_guard(run_issue))

    p = tasks.add_parser("show", help="describe certificates; exit 1 if expired or invalid")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", type=Path, help="a PKI directory (VDSM layout) or a CA directory")
    where.add_argument("--cert", type=Path, help="one certificate file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_guard(run_show))

    p = tasks.add_parser("csr", help="make (or reuse) the key in DIR and print a CSR for it")
    p.add_argument("--dir", type=Path, required=True, help="PKI directory (VDSM layout)")
    _names(p)
    _key_type(p)
    p.add_argument("-o", "--out", type=Path, help="write the CSR here instead of stdout")
    p.set_defaults(func=_guard(run_csr))

    p = tasks.add_parser("sign", help="sign a CSR with a CA")
    p.add_argument("--ca-dir", type=Path, required=True, help="CA directory (from create-ca)")
    p.add_argument("--csr", type=Path, required=True, help="the PEM certificate request")
    p.add_argument("--client", action="store_true", help="client-only certificate")
    p.add_argument("--days", type=int, default=CERT_DAYS, help="validity (default %(default)s)")
    p.add_argument("-o", "--out", type=Path, help="write the certificate here, not stdout")
    p.set_defaults(func=_guard(run_sign))

    p = tasks.add_parser("install", help="install a signed certificate for DIR's key")
    p.add_argument("--dir", type=Path, required=True, help="PKI directory holding the key")
    p.add_argument("--cert", type=Path, required=True, help="the signed certificate")
    p.add_argument("--cacert", type=Path, required=True, help="the CA certificate")
    p.set_defaults(func=_guard(run_install))


def _names(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="HOST",
        help="DNS name for the SAN (repeatable); the first is the CN by default",
    )
    p.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="IP",
        help="IP address for the SAN (repeatable)",
    )
    p.add_argument("--cn", help="subject common name (default: first --name, then first --ip)")


def _key_type(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--key-type", choices=("ec", "rsa"), default="ec", help="EC P-256 (default) or RSA 2048"
    )


def _force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="overwrite existing files")


def _guard(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn PKI problems into a message on stderr and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(func(args))
        except (PkiError, _Refused) as exc:
            print(f"vdsm-tool pki: {exc}", file=sys.stderr)
            return EXIT_PROBLEM
        except ValueError as exc:
            print(f"vdsm-tool pki: invalid request: {exc}", file=sys.stderr)
            return EXIT_PROBLEM

    return run


def _refuse_existing(force: bool, *paths: Path) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise _Refused(f"{', '.join(existing)} already exist(s); use --force to replace")


def run_create_ca(args: argparse.Namespace) -> int:
    paths = CaPaths(args.dir)
    _refuse_existing(args.force, paths.cert, paths.key)
    _positive_days(args.days)
    ca = create_ca(args.cn, days=args.days, key_type=args.key_type)
    write_ca(paths, ca)
    print(f"CA certificate: {paths.cert}\nCA key:         {paths.key}")
    return EXIT_OK


def run_issue(args: argparse.Namespace) -> int:
    _positive_days(args.days)
    if not (args.name or args.ip or args.cn):
        raise _Refused("name the certificate: --name HOST, --ip IP or --cn NAME")
    ca = load_ca(CaPaths(args.ca_dir))
    check_validity("CA certificate", CaPaths(args.ca_dir).cert, ca.cert)
    paths = PkiPaths(args.dir)
    _refuse_existing(args.force, paths.cert, paths.key)
    cred = issue_cert(
        ca,
        args.cn,
        hostnames=args.name,
        ips=args.ip,
        purpose="client" if args.client else "host",
        days=args.days,
        key_type=args.key_type,
    )
    write_identity(paths, cred, ca.cert)
    print(
        f"CA certificate: {paths.cacert}\ncertificate:    {paths.cert}\nkey:            "
        f"{paths.key}\nexpires:        {cred.cert.not_valid_after_utc:%Y-%m-%d %H:%M UTC}"
    )
    return EXIT_OK


def _positive_days(days: int) -> None:
    if days <= 0:
        raise _Refused(f"--days must be positive, not {days}")


def run_show(args: argparse.Namespace) -> int:
    report: list[tuple[str, Path, CertInfo]] = []
    problem: str | None = None
    try:
        if args.cert:
            cert = store.read_cert("certificate", args.cert)
            report.append(("certificate", args.cert, describe(cert)))
            check_validity("certificate", args.cert, cert)
        elif (args.dir / "certs").is_dir() or (args.dir / "keys").is_dir():
            paths = PkiPaths(args.dir)
            for what, path in (("CA certificate", paths.cacert), ("certificate", paths.cert)):
                if path.is_file():
                    try:
                        report.append((what, path, describe(store.read_cert(what, path))))
                    except PkiError:
                        pass  # check_identity names it below
            check_identity(paths)
        elif CaPaths(args.dir).cert.exists():
            ca_paths = CaPaths(args.dir)
            ca_cert = store.read_cert("CA certificate", ca_paths.cert)
            report.append(("CA certificate", ca_paths.cert, describe(ca_cert)))
            check_validity("CA certificate", ca_paths.cert, ca_cert)
            load_ca(ca_paths)
        else:
            raise PkiError(
                "directory",
                args.dir,
                "holds neither certs/ and keys/ (VDSM layout) nor cacert.pem (a CA directory)",
            )
    except PkiError as exc:
        problem = str(exc)
    _print_report(report, problem, as_json=args.json)
    return EXIT_OK if problem is None else EXIT_PROBLEM


def _print_report(
    report: list[tuple[str, Path, CertInfo]], problem: str | None, *, as_json: bool
) -> None:
    if as_json:
        doc = {
            "certificates": [
                {"role": what, "path": str(path), **info.as_dict()} for what, path, info in report
            ],
            "ok": problem is None,
            "problem": problem,
        }
        print(json.dumps(doc, indent=2))
        return
    for what, path, info in report:
        print(f"{what}: {path}")
        print(f"  subject:     {info.subject}")
        print(f"  issuer:      {info.issuer}")
        if info.sans:
            print(f"  names:       {', '.join(info.sans)}")
        if info.usages:
            print(f"  usages:      {', '.join(info.usages)}")
        print(f"  key:         {info.key}{' (CA)' if info.is_ca else ''}")
        print(f"  valid from:  {info.not_before:%Y-%m-%d %H:%M UTC}")
        print(f"  valid until: {info.not_after:%Y-%m-%d %H:%M UTC} ({_days(info.days_left)})")
        print(f"  sha256:      {info.fingerprint_sha256}")
    if problem is None:
        print("status: OK")
    else:
        print(f"status: PROBLEM: {problem}", file=sys.stderr)


def _days(left: int) -> str:
    return f"{left} days left" if left >= 0 else "EXPIRED"


def run_csr(args: argparse.Namespace) -> int:
    if not (args.name or args.ip or args.cn):
        raise _Refused("name the host: --name HOST, --ip IP or --cn NAME")
    paths = PkiPaths(args.dir)
    if paths.key.exists():
        key = store.read_key("private key", paths.key)
    else:
        key = new_key(args.key_type)
        store.write_key(paths.key, key)
        print(f"created key {paths.key}", file=sys.stderr)
    csr = make_csr(key, args.name, args.ip, common_name=args.cn)
    _emit(csr.public_bytes(serialization.Encoding.PEM), args.out)
    return EXIT_OK


def run_sign(args: argparse.Namespace) -> int:
    _positive_days(args.days)
    ca_paths = CaPaths(args.ca_dir)
    ca = load_ca(ca_paths)
    check_validity("CA certificate", ca_paths.cert, ca.cert)
    csr = store.read_csr("certificate request", args.csr)
    try:
        cert = sign_csr(
            ca.cert, ca.key, csr, args.days, purpose="client" if args.client else "host"
        )
    except ValueError as exc:
        raise PkiError("certificate request", args.csr, str(exc)) from None
    _emit(store.cert_pem(cert), args.out)
    return EXIT_OK


def run_install(args: argparse.Namespace) -> int:
    paths = PkiPaths(args.dir)
    key = store.read_key("private key", paths.key)
    cert = store.read_cert("certificate", args.cert)
    cas = store.read_certs("CA certificate", args.cacert)
    check_validity("certificate", args.cert, cert, dt.datetime.now(dt.UTC))
    check_key_matches(paths.key, key, args.cert, cert)
    check_signed_by("certificate", args.cert, cert, args.cacert, cas)
    store.write_cert(paths.cacert, *cas)
    store.write_cert(paths.cert, cert)
    print(f"installed {paths.cert} and {paths.cacert}")
    return EXIT_OK


def _emit(pem: bytes, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(pem.decode("ascii"))
    else:
        store.ensure_dir(out.parent.resolve(), store.PUBLIC_DIR_MODE)
        store.atomic_write(out, pem, store.CERT_MODE)
