"""A real Prometheus server (Debian's package, installed by `make prometheus`) scraping
loopback targets every second, for the metric-source tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .servers import free_port, stop_process, wait_http


class PrometheusProcess:
    """`prometheus` with its own config and data folder on a free loopback port."""

    def __init__(
        self,
        data_dir: Path,
        targets: list[str],
        scrape_interval: str = "1s",
        file_sd: Path | None = None,
    ):
        """:param file_sd: a file_sd JSON of further targets (re-read when it changes)."""
        self.data_dir = Path(data_dir)
        self.targets = targets
        self.file_sd = file_sd
        self.scrape_interval = scrape_interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.data_dir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> PrometheusProcess:
        exe = shutil.which("prometheus")
        if exe is None:
            raise RuntimeError("prometheus is not installed: run `make prometheus`")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "prometheus.yml"
        targets = ", ".join(f'"{t}"' for t in self.targets)
        text = (
            f"global: {{scrape_interval: {self.scrape_interval}, evaluation_interval: 15s}}\n"
            "scrape_configs:\n"
            f"  - job_name: model-gateway\n"
            f"    scrape_interval: {self.scrape_interval}\n"
            f"    static_configs: [{{targets: [{targets}]}}]\n"
        )
        if self.file_sd is not None:
            text += (
                "  - job_name: model-servers\n"
                f"    scrape_interval: {self.scrape_interval}\n"
                f"    file_sd_configs: [{{files: ['{self.file_sd}'], refresh_interval: 1s}}]\n"
            )
        config.write_text(text)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    exe,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_http(f"{self.url}/-/ready", timeout=timeout, proc=self.proc, log=self.log)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
