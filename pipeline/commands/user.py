"""`vigil user`: add, remove, re-password, re-role and list the operator console's users.

The first admin has to come from here (the console has no sign-up page), and so does the way back
in when every admin has forgotten their password. Passwords come from the terminal, or with
`--password-stdin` as one line of stdin for scripts; they are never printed, nor their hashes.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from pipeline.commands import add_config_arg
from pipeline.configfile import load_config
from pipeline.console.users import Role, UserStore, name_problem, password_problem
from pipeline.errors import VigilError
from pipeline.terminal import EXIT_OK

_ROLES = [r.value for r in Role]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user", description="add a user (asks for the password)")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--role", choices=_ROLES, default=Role.viewer.value, help="what they may do (default viewer)"
    )
    remove = actions.add_parser("remove", help="remove a user and end their sessions")
    remove.add_argument("name", metavar="NAME")
    passwd = actions.add_parser("passwd", help="set a user's password and end their sessions")
    passwd.add_argument("name", metavar="NAME")
    role = actions.add_parser("role", help="change a user's role")
    role.add_argument("name", metavar="NAME")
    role.add_argument("--role", choices=_ROLES, required=True, help="the new role")
    listing = actions.add_parser("list", help="print 'name role' for every user")
    for sub in (add, remove, passwd, role, listing):
        add_config_arg(sub)
    for sub in (add, passwd):
        sub.add_argument(
            "--password-stdin", action="store_true", help="read the password as one line of stdin"
        )


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with UserStore.from_config(config.console) as store:
        if args.action == "list":
            for user in store.users():
                print(f"{user.name} {user.role}")
        elif args.action == "add":
            if problem := name_problem(args.name):
                raise VigilError(problem)
            if store.get(args.name) is not None:  # before asking for a password that would be refused
                raise VigilError(f"user {args.name} already exists")
            user = store.add(args.name, read_password(args.password_stdin), args.role)
            print(f"user {user.name} added ({user.role})", file=sys.stderr)
        elif args.action == "passwd":
            if store.get(args.name) is None:
                raise VigilError(f"no user named {args.name}")
            ended = store.set_password(args.name, read_password(args.password_stdin))
            print(f"user {args.name}: password changed, {ended} session(s) ended", file=sys.stderr)
        elif args.action == "role":
            store.set_role(args.name, args.role)
            print(f"user {args.name} is now {args.role}", file=sys.stderr)
        else:
            store.remove(args.name)
            print(f"user {args.name} removed", file=sys.stderr)
    return EXIT_OK


def read_password(from_stdin: bool) -> str:
    """One line of stdin, or a password typed twice at the terminal; checked against the rules."""
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise VigilError("--password-stdin: stdin is empty, expected the password on one line")
        password = line.removesuffix("\n").removesuffix("\r")
        if problem := password_problem(password):
            raise VigilError(problem)
        return password
    if not sys.stdin.isatty():
        raise VigilError("no terminal to ask the password on: give it with --password-stdin")
    password = getpass.getpass("Password: ")
    if problem := password_problem(password):
        raise VigilError(problem)
    if getpass.getpass("Repeat password: ") != password:
        raise VigilError("the passwords differ")
    return password
