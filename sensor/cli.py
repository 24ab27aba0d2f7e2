"""`agent-sensor`: the daemon (`run`) and its clients. Every client command takes --server."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .bpf_object import DEFAULT_CACHE
from .client import DEFAULT_SERVER
from .decode import open_result
from .kinds import RULE_KIND_NAMES

server_option = click.option(
    "--server", default=DEFAULT_SERVER, show_default=True, envvar="AGENT_SENSOR_SERVER",
    help="The daemon's gRPC address: unix:///path/to.sock or HOST:PORT (TLS: see AGENT_SENSOR_TLS_CA, "
         "AGENT_SENSOR_TLS_CERT, AGENT_SENSOR_TLS_KEY, AGENT_SENSOR_TOKEN_FILE).")


def _client(server: str):
    from .client import SensorClient
    return SensorClient(server)


def _rpc(server: str, call):
    """call(client) against the daemon at server; any failure becomes a clear CLI error."""
    try:
        with _client(server) as client:
            return call(client)
    except Exception as exc:  # noqa: BLE001 - reported by _fail_rpc, never as a traceback
        _fail_rpc(exc, server)


def _follow(server: str, stream, as_dict, as_line) -> None:
    """Print a server stream, one line per message: JSON (as_dict) or text (as_line); Ctrl-C ends it."""
    try:
        with _client(server) as client:
            for message in stream(client):
                if as_dict is not None:
                    import orjson
                    sys.stdout.buffer.write(orjson.dumps(as_dict(message)) + b"\n")
                else:
                    sys.stdout.write(as_line(message) + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - reported by _fail_rpc, never as a traceback
        _fail_rpc(exc, server)


def _fail_rpc(exc, server: str) -> None:
    import grpc

    from .export.security import SecurityError
    if isinstance(exc, SecurityError):
        raise click.ClickException(str(exc))
    if isinstance(exc, grpc.RpcError):
        code = exc.code()
        if code == grpc.StatusCode.UNAUTHENTICATED:
            raise click.ClickException(f"{server} refused this client: {exc.details()} "
                                       "(set AGENT_SENSOR_TOKEN_FILE, or AGENT_SENSOR_TLS_CERT/KEY for mutual TLS)")
        if code == grpc.StatusCode.UNAVAILABLE:
            raise click.ClickException(
                f"no agent-sensor daemon answers at {server}: start it with `agent-sensor run` "
                f"(as root), or pass --server ({exc.details()})")
        raise click.ClickException(f"{code.name}: {exc.details()}")
    raise exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agent-sensor")
def main() -> None:
    """Runtime security sensor for AI-agent processes, on eBPF.

    The daemon (`agent-sensor run`, as root) traces agent processes in the kernel, judges each
    file open, connect and exec against the agent's profile, and alerts or kills the agent's
    process tree. The other commands are gRPC clients of a running daemon.
    """


def _read_config(ctx, _param, path):
    """--config: the file's settings become the defaults the other flags override."""
    if path is not None:
        from .config import ConfigError, load_config
        try:
            ctx.default_map = {**(ctx.default_map or {}), **load_config(path)}
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--config")
    return path


@main.command()
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path), is_eager=True, expose_value=False,
              callback=_read_config, help="YAML file with these settings (see examples/config.yaml); flags override it.")
@click.option("--profiles", "profile_paths", multiple=True, default=["/etc/agent-sensor/profiles"],
              show_default=True, type=click.Path(), help="Profile file or directory (repeatable).")
@click.option("--listen", multiple=True, help=f"gRPC address (repeatable). Default: {DEFAULT_SERVER}. "
              "HOST:PORT listens on TCP, only with --tls-cert/--tls-key.")
@click.option("--audit-only", is_flag=True, help="Enforce nothing: every kill or quarantine becomes an alert "
              "saying what would have been done (for rolling out profiles).")
@click.option("--spool", type=click.Path(dir_okay=False, path_type=Path), default=Path("/var/lib/agent-sensor/alerts.db"),
              show_default=True, help="SQLite file every alert is stored in before anyone is told of it.")
@click.option("--spool-max-mb", type=click.IntRange(min=1), default=256, show_default=True,
              help="Oldest alerts are pruned beyond this size.")
@click.option("--spool-max-days", type=click.FloatRange(min=0, min_open=True), default=30.0, show_default=True,
              help="Alerts older than this are pruned.")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="TLS certificate for TCP addresses.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="Its key (root-owned, mode 600).")
@click.option("--tls-client-ca", type=click.Path(dir_okay=False, path_type=Path),
              help="Require TCP clients to present a certificate signed by this CA (mutual TLS).")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Require TCP clients to send this bearer token (root-owned, mode 600).")
@click.option("--metrics", "metrics_address", metavar="HOST:PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (plain HTTP: keep it on loopback "
                   "or a monitoring network).")
@click.option("--output", "outputs", multiple=True, metavar="SPEC",
              help="Also write alerts to: stdout | jsonl:PATH[,max_mb=N][,keep=K] | "
                   "syslog:udp://HOST:PORT | syslog:tcp://HOST:PORT | syslog:unix:PATH; add ,format=ocsf for "
                   "OCSF Detection Findings (default ,format=native). Repeatable.")
@click.option("--bpf-cache", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_CACHE,
              show_default=True, help="Directory keeping the compiled BPF programs between starts (root-owned, "
              "written by no one else); a start with nothing cached for this kernel compiles them.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
def run(profile_paths, listen, audit_only, spool, spool_max_mb, spool_max_days, tls_cert, tls_key, tls_client_ca,
        token_file, metrics_address, outputs, bpf_cache, verbose) -> None:
    """Run the sensor daemon in the foreground (root). Logs one line per alert.

    Stops on SIGTERM or Ctrl-C, detaching every BPF program."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    from .daemon import Daemon, StartupError, block_stop_signals
    from .export.spool import Retention
    block_stop_signals()
    from .export.security import TcpSecurity
    if bool(tls_cert) != bool(tls_key) or ((tls_client_ca or token_file) and not tls_cert):
        raise click.UsageError("--tls-cert and --tls-key go together, and client authentication needs them")
    security = TcpSecurity(tls_cert, tls_key, tls_client_ca, token_file) if tls_cert else None
    daemon = Daemon(list(profile_paths), list(listen), audit_only, spool,
                    Retention(max_bytes=spool_max_mb * 1024 * 1024, max_age_s=spool_max_days * 86400), security,
                    metrics_address, list(outputs), bpf_cache)
    try:
        daemon.start()
    except StartupError as exc:
        daemon.stop()
        raise click.ClickException(str(exc))
    try:
        daemon.run()
    finally:
        daemon.stop()


@main.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.option("--profile", required=True, help="Name of the loaded profile to run CMD under.")
@server_option
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(profile, server, cmd) -> None:
    """Start CMD as an agent under PROFILE: agent-sensor exec --profile NAME -- CMD ARGS...

    The daemon tracks this process first and CMD replaces it, so CMD is watched from its first
    instruction. If the daemon cannot track it, CMD is not started (exit 1)."""
    import shutil
    program = cmd[0] if "/" in cmd[0] else shutil.which(cmd[0])
    if not program:
        raise click.ClickException(f"{cmd[0]}: command not found")
    # Any failure is reported and CMD never starts untracked.
    _rpc(server, lambda client: client.track(os.getpid(), profile, pending_exec=True))
    try:
        os.execv(program, list(cmd))
    except OSError as exc:
        raise click.ClickException(f"{program}: {exc.strerror}")


@main.command()
@server_option
@click.option("-f", "--follow", is_flag=True, help="Keep streaming new alerts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the proto's JSON mapping).")
@click.option("--agent", "agents", multiple=True, help="Only alerts of this agent (profile name; repeatable).")
@click.option("--rule", "rules", multiple=True, type=click.Choice(sorted(RULE_KIND_NAMES)),
              help="Only alerts of this rule kind (repeatable).")
@click.option("--backlog", default=1000, show_default=True, help="Recent alerts to show first.")
@click.option("--since-id", type=click.IntRange(min=0), default=None,
              help="Instead of --backlog: every stored alert after this id (the last one you saw), in order.")
def alerts(server, follow, as_json, agents, rules, backlog, since_id) -> None:
    """Print alerts from the daemon: recent ones (or all after --since-id), then new ones with --follow."""
    from .alerts import alert_to_dict, log_line
    _follow(server, lambda client: client.alerts(follow=follow, backlog=backlog, agents=agents,
                                                 rule_kinds=[RULE_KIND_NAMES[r] for r in rules], since_id=since_id),
            alert_to_dict if as_json else None, log_line)


@main.command()
@server_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(server, as_json) -> None:
    """Version, kernel capabilities, profiles, tracked agent processes and counters."""
    from google.protobuf.json_format import MessageToDict
    st = _rpc(server, lambda client: client.status())
    if as_json:
        import orjson
        click.echo(orjson.dumps(MessageToDict(st, preserving_proto_field_name=True),
                                option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"agent-sensor {st.version} on {st.hostname}, API on {', '.join(st.listen)}")
    click.echo("capabilities:")
    for cap in st.capabilities:
        click.echo(f"  {'yes' if cap.available else 'NO ':3} {cap.name:44} {cap.detail}")
    click.echo(f"profiles: {', '.join(p.name for p in st.profiles) or 'none'}")
    click.echo(f"tracked processes: {len(st.tracked)}")
    for t in st.tracked:
        click.echo(f"  {t.pid:>7} {t.agent:24} {t.exe}")
    click.echo(f"events processed: {st.events_processed}  decode errors: {st.decode_errors}  "
               f"handler errors: {st.handler_errors}  alerts: {st.alerts}")
    click.echo(f"dns: {st.dns.addresses_learned} addresses learned, {st.dns.unparsed} unparsed, "
               f"{st.dns.untrusted} from untrusted resolvers, {st.dns.not_compiled} judged in user space only")
    click.echo("kernel events: " + "  ".join(f"{k}={v}" for k, v in sorted(st.events.items())))
    click.echo("ring-buffer drops: " + "  ".join(f"{k}={v}" for k, v in sorted(st.ring_buffer_drops.items())))
    click.echo(f"user-space backlog: {st.events_backlog} events waiting, {st.backlog_drops} dropped")
    click.echo(f"repeated opens counted in the kernel: {st.repeats_counted} ({st.repeats_cached} opens counted now)")


@main.group()
def profiles() -> None:
    """Check profile files, or list the profiles a daemon has loaded."""


@profiles.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())
def check(files) -> None:
    """Validate profiles. Exit 0 if valid, else print FILE:LINE: problem for each and exit 1."""
    from .profiles import ProfileError, load_profiles
    try:
        loaded = load_profiles(files)
    except ProfileError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    for p in loaded:
        click.echo(f"ok: {p.name} ({p.source})")


@profiles.command()
@server_option
def reload(server) -> None:
    """Have the daemon load its profiles again (as SIGHUP does); exit 1, changing nothing, if
    any profile is invalid."""
    done = _rpc(server, lambda client: client.reload_profiles())
    if not done.reloaded:
        raise click.ClickException(f"not reloaded, the loaded profiles stay:\n{done.errors}")
    click.echo(f"reloaded: added {', '.join(done.added) or 'none'}; kept {', '.join(done.kept) or 'none'}; "
               f"removed {', '.join(done.removed) or 'none'}")


@profiles.command(name="list")
@server_option
def list_(server) -> None:
    """Profiles loaded by the daemon, with their match selectors."""
    summaries = _rpc(server, lambda client: client.profiles())
    for p in summaries:
        click.echo(f"{p.name:24} on_violation={p.on_violation:6} {p.file}")
        for m in p.match:
            click.echo(f"    match {m}")
        for path in p.kernel_exec_match:
            click.echo(f"    kernel exec match {path}")


@main.group()
def quarantine() -> None:
    """Quarantined agents: list, inspect, release or kill them."""


def _print_incident(inc, verbose: bool) -> None:
    click.echo(f"{inc.id}  {inc.state:11} agent={inc.agent} root_pid={inc.root_pid} rule={inc.rule} "
               f"method={inc.method} frozen={'yes' if inc.frozen else 'no'} "
               f"network_cut={'yes' if inc.network_cut else 'no'}")
    if not verbose:
        return
    from .top import process_line, process_tree
    click.echo(f"  reason: {inc.reason}  (alert #{inc.alert_id})")
    click.echo(f"  cgroup: {inc.cgroup or '-'}")
    click.echo(f"  detail: {inc.detail}")
    click.echo("  process tree:")
    for indent, p in process_tree(inc):
        click.echo(process_line(indent, p))
        for f in p.files:
            click.echo(f"{indent}    fd {f.fd}: {f.target}")
        for sock in p.sockets:
            click.echo(f"{indent}    socket {sock.protocol}/{sock.family} {sock.state} {sock.local} -> {sock.remote or '-'}")
    click.echo("  last events:")
    for line in inc.last_events:
        click.echo(f"    {line}")
    for line in inc.history:
        click.echo(f"  {line}")


def _incident_command(name: str, doc: str, call):
    @quarantine.command(name=name, help=doc)
    @click.argument("incident_id")
    @server_option
    def command(incident_id, server) -> None:
        _print_incident(_rpc(server, lambda client: call(client, incident_id)), verbose=True)
    return command


@quarantine.command(name="list")
@server_option
def quarantine_list(server) -> None:
    """Every incident of this daemon run, oldest first."""
    incidents = _rpc(server, lambda client: client.incidents())
    for inc in incidents:
        _print_incident(inc, verbose=False)
    if not incidents:
        click.echo("no incidents")


_incident_command("show", "An incident's record: rule, process tree, open files and sockets, last events.",
                  lambda client, i: client.incident(i))
_incident_command("release", "Thaw the agent, restore its network and cgroups.",
                  lambda client, i: client.release_incident(i))
_incident_command("kill", "End the quarantined agent's whole process tree.",
                  lambda client, i: client.kill_incident(i))


@main.command()
@server_option
@click.option("--agent", "agents", multiple=True, help="Only events of this agent (profile name; repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (the proto's JSON mapping).")
def events(server, agents, as_json) -> None:
    """Follow every event of the agents as the daemon judges it (not stored; a slow reader loses
    events, and each record says how many so far). Ctrl-C to leave."""
    from google.protobuf.json_format import MessageToDict

    def line(record) -> str:
        return (f"#{record.seq} {record.instance_id} pid={record.pid} {record.type} {record.what}"
                + (f" -> {open_result(record.result)}" if record.HasField("result") else "")
                + (f" x{record.repeats} (repeats counted in the kernel)" if record.repeats else "")
                + (" [kernel acted]" if record.kernel_acted else "")
                + (f" ({record.dropped} dropped so far)" if record.dropped else ""))

    _follow(server, lambda client: client.events(agents),
            (lambda r: MessageToDict(r, preserving_proto_field_name=True)) if as_json else None, line)


@main.command()
@server_option
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.2),
              help="Seconds between redraws.")
@click.option("--once", is_flag=True, help="Print one view and exit (for scripts).")
def top(server, interval, once) -> None:
    """A live view: tracked agents and their event rates, the latest alerts, quarantined
    incidents with their process trees. Ctrl-C to leave."""
    from .top import run as run_top
    try:
        _rpc(server, lambda client: run_top(client, interval, once, click.echo))
    except KeyboardInterrupt:
        pass


@main.group()
def scenario() -> None:
    """Attack stories replayed as tracked agents (sensor/scenarios/catalogue)."""


scenario_dir_option = click.option(
    "--dir", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="Scenario folder  [default: the shipped catalogue]")
workdir_option = click.option(
    "--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where scenario workspaces live; profiles name paths under it  [default: /var/tmp/agent-sensor-scenarios]")


def _scenarios(directory, workdir):
    from .scenarios.spec import CATALOGUE, DEFAULT_WORKDIR, ScenarioError, catalogue
    try:
        return catalogue(directory or CATALOGUE, workdir or DEFAULT_WORKDIR)
    except ScenarioError as exc:
        raise click.ClickException(str(exc))


@scenario.command(name="list")
@scenario_dir_option
def scenario_list(directory) -> None:
    """Every scenario: name and title."""
    for s in _scenarios(directory, None):
        click.echo(f"{s.name:<28} {s.title}")


@scenario.command(name="profiles")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write the rendered profiles to (created).")
@scenario_dir_option
@workdir_option
def scenario_profiles(out, directory, workdir) -> None:
    """Write every scenario's profiles, for a daemon started separately (`run --profiles OUT`)."""
    from .scenarios.setup import write_profiles
    for path in write_profiles(_scenarios(directory, workdir), out):
        click.echo(path)


@scenario.command(name="run")
@click.argument("names", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="Run every scenario.")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Also write JUnit XML here.")
@click.option("--server", default=None, envvar="AGENT_SENSOR_SERVER",
              help="A running daemon with the scenario profiles loaded  [default: start one for the run]")
@click.option("-v", "--verbose", is_flag=True, help="Print every scenario's steps and alerts.")
@scenario_dir_option
@workdir_option
def scenario_run(names, run_all, junit, server, verbose, directory, workdir) -> None:
    """Run scenarios NAMES (or --all) and print a pass/fail table; exit 1 if any failed."""
    from .scenarios import report
    from .scenarios.setup import run_scenarios
    from .scenarios.spec import DEFAULT_WORKDIR
    scenarios = _scenarios(directory, workdir)
    known = {s.name: s for s in scenarios}
    if run_all == bool(names):
        raise click.UsageError("give scenario names or --all (see `agent-sensor scenario list`)")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.UsageError(f"unknown scenario {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = scenarios if run_all else [known[n] for n in names]
    try:
        results = run_scenarios(chosen, scenarios, server, workdir or DEFAULT_WORKDIR,
                                progress=lambda r: click.echo(report.details(r) if verbose else
                                                              f"{r.scenario.name}: {'pass' if r.passed else 'FAIL'}"))
    except RuntimeError as exc:
        raise click.ClickException(str(exc))
    click.echo(report.table(results))
    if junit:
        report.junit(results, junit)
    sys.exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
