import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def images64():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 64, 64, generator=g) * 2 - 1


@pytest.fixture
def one_thread():
    """torch on one thread for the test (a module opts in with pytestmark = usefixtures("one_thread"))."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """install(module, source, group, name, target): an installed package as importlib.metadata finds it (a module
    and a dist-info whose entry_points.txt puts `name = target` in `group`), on sys.path for the test only."""

    def install(module: str, source: str, group: str, name: str, target: str) -> None:
        info = tmp_path / f"{module}-0.1.dist-info"
        info.mkdir()
        (tmp_path / f"{module}.py").write_text(source)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module.replace('_', '-')}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[{group}]\n{name} = {target}\n")
        monkeypatch.syspath_prepend(str(tmp_path))

    return install


@pytest.fixture(scope="session")
def svgbench_cli():
    """`svgbench ARGS` run in this process: a CompletedProcess with the exit status and the text a shell would
    see. A subprocess would add 3-5 s of imports per call and prove nothing more for these tests; the console
    command itself runs for real in tests/test_imports.py, tests/test_runner.py (torchrun) and
    tests/test_runner_interrupt.py (signals).

    Like the subprocesses it replaces, each call starts clean and leaves nothing behind: torch on one thread
    (OMP_NUM_THREADS=1 there), warnings printed to stderr as PYTHONWARNINGS=default prints them, `env` set for
    the call only, environment variables, the SIGINT handler and the unraisable hook the command sets restored,
    and encoders, tasks, datasets and findings a --plugin registered unregistered (a new process would not have
    them)."""
    import contextlib
    import io
    import os
    import signal
    import subprocess
    import sys
    import warnings

    from svgbench.cli import main
    from svgbench.data import list_datasets, unregister_dataset
    from svgbench.encoders import list_encoders, unregister_encoder
    from svgbench.tasks import list_findings, list_tasks, unregister_finding, unregister_task

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    def run(*args, cwd=None, env=None):
        argv = [str(a) for a in args]
        out, err = io.StringIO(), io.StringIO()
        encoders, tasks, datasets = set(list_encoders()), set(list_tasks()), set(list_datasets())
        findings = set(list_findings())
        saved_env = dict(os.environ)
        threads, on_sigint, unraisable = torch.get_num_threads(), signal.getsignal(signal.SIGINT), sys.unraisablehook
        os.environ.update(env or {})
        torch.set_num_threads(1)
        try:
            with contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out), \
                    contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.simplefilter("default")
                warnings.showwarning = show  # pytest would otherwise record them instead of printing them
                try:
                    rc = main(argv)
                except SystemExit as e:  # what the interpreter makes of it when `svgbench` exits
                    if e.code is None or isinstance(e.code, int):
                        rc = e.code or 0
                    else:
                        print(e.code, file=sys.stderr)
                        rc = 1
        finally:
            torch.set_num_threads(threads)
            signal.signal(signal.SIGINT, on_sigint)  # `svgbench run` installs its Ctrl-C handling for the process
            sys.unraisablehook = unraisable
            for name in set(list_encoders()) - encoders:
                unregister_encoder(name)
            for name in set(list_tasks()) - tasks:
                unregister_task(name)
            for name in set(list_datasets()) - datasets:
                unregister_dataset(name)
            for name in set(list_findings()) - findings:
                unregister_finding(name)
            for key in set(os.environ) - set(saved_env):
                del os.environ[key]
            os.environ.update(saved_env)
        return subprocess.CompletedProcess(["svgbench", *argv], rc, out.getvalue(), err.getvalue())

    return run
