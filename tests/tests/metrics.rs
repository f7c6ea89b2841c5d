//! `vnetd --metrics` read by real tools: `promtool check metrics` accepts
//! the text, and a real Prometheus server scraping it answers queries with
//! the values `vnetctl stats` shows. Also `--log-format json` and
//! `--version`.
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use vnet_e2e::{have_root, poll, vnetd_path, World};

/// Where vnetd serves metrics and Prometheus its API, both on the loopback
/// of the world's own host namespace (nothing else listens there).
const METRICS: &str = "127.0.0.1:9469";
const PROMETHEUS: &str = "127.0.0.1:9090";
const PINGS: u32 = 20;

const TOPOLOGY: &str = include_str!("../fixtures/two-guests.yaml");

/// A Prometheus server in the host namespace, scraping vnetd every second;
/// killed when dropped.
struct Prometheus {
    child: Child,
}

impl Prometheus {
    fn start(w: &World) -> Result<Prometheus> {
        let dir = w.dir().join("prometheus");
        std::fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: vnetd\n    static_configs:\n      - targets: [\"{METRICS}\"]\n"
            ),
        )?;
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(&config)
            .output()
            .context("running promtool (apt-get install prometheus; scripts/bootstrap.sh does)")?;
        if !check.status.success() {
            bail!(
                "promtool check config: {}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &w.host, "prometheus"])
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting prometheus")?;
        let mut p = Prometheus { child };
        let ready = format!("http://{PROMETHEUS}/-/ready");
        let log = dir.join("prometheus.log");
        poll("prometheus ready", Duration::from_secs(30), || {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "prometheus exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            Ok(w.http_get(&ready).ok())
        })?;
        Ok(p)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the PromQL `query` (a single series), if it has one yet.
fn query(w: &World, query: &str) -> Result<Option<f64>> {
    let out = w.in_host(&[
        "curl",
        "-sS",
        "-f",
        "--max-time",
        "5",
        "-G",
        &format!("http://{PROMETHEUS}/api/v1/query"),
        "--data-urlencode",
        &format!("query={query}"),
    ])?;
    if !out.status.success() {
        bail!("query {query}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if v["status"] != "success" {
        bail!("query {query}: {v}");
    }
    let result = v["data"]["result"].as_array().context("no result array")?;
    match result.as_slice() {
        [] => Ok(None),
        [one] => {
            let value = one["value"][1].as_str().context("no value")?;
            Ok(Some(value.parse()?))
        }
        more => bail!("query {query}: {} series, expected one: {v}", more.len()),
    }
}

/// `promtool check metrics` of `text`: its complaints, empty when clean.
fn promtool_check(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool (apt-get install prometheus; scripts/bootstrap.sh does)")?;
    child
        .stdin
        .take()
        .context("promtool stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "promtool check metrics failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The sample `name{labels}` of a scrape (labels as the text writes them,
/// sorted by name), as a number.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Guests without IPv6: its router solicitations and DAD would reach the
/// worker at times of their own and make counters move under the test.
fn quiet_guest(w: &mut World, name: &str, host_if: &str, mac: &str, ip: &str) -> Result<()> {
    let g = w.guest(name, host_if, mac, ip)?;
    let out = w.exec(
        &g,
        &["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"],
    )?;
    if !out.status.success() {
        bail!("sysctl: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[test]
fn prometheus_scrapes_vnetd_and_sees_what_vnetctl_stats_shows() -> Result<()> {
    if !have_root("prometheus_scrapes_vnetd_and_sees_what_vnetctl_stats_shows") {
        return Ok(());
    }
    let mut w = World::new("metrics")?;
    quiet_guest(&mut w, "vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    quiet_guest(&mut w, "vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    let topology = w.topology_file(TOPOLOGY)?;
    w.start_vnetd_args(&topology, &["--metrics", METRICS, "--log-format", "json"])?;
    let (vm1, vm2) = (w.guests[0].clone(), w.guests[1].clone());
    assert_eq!(w.ping(&vm1, &vm2.ip, PINGS)?, PINGS);

    // The text itself: what promtool accepts, with the figures of the
    // traffic just sent.
    let url = format!("http://{METRICS}/metrics");
    let text = w.http_get(&url)?;
    promtool_check(&text)?;
    let redirected = sample(
        &text,
        r#"vnet_packets_by_reason_total{reason="tc_hit_redirect"}"#,
    )
    .with_context(|| format!("no tc_hit_redirect sample in:\n{text}"))?;
    // PINGS requests and PINGS replies; the first of each direction (and
    // the ARP exchange) went through userspace.
    assert!(
        redirected >= u64::from(2 * PINGS - 2),
        "{redirected} kernel redirects for {PINGS} pings each way:\n{text}"
    );
    assert_eq!(
        sample(&text, r#"vnet_topology_revision{state="running"}"#),
        Some(1),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"vnet_topology_revision{state="stored"}"#),
        Some(1),
        "{text}"
    );

    // A real server scraping it every second.
    let _prometheus = Prometheus::start(&w)?;
    poll(
        "prometheus: up{job=\"vnetd\"} == 1",
        Duration::from_secs(30),
        || Ok(query(&w, r#"up{job="vnetd"}"#)?.filter(|v| *v == 1.0)),
    )?;
    // The traffic is over, so vnetctl stats and the scrapes converge on the
    // same figures; poll both until they agree.
    let port = |stats: &serde_json::Value, field: &str| -> Result<(String, u64)> {
        let p = stats["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["interface"] == "vm1-h")
            .context("no vm1-h in vnetctl stats")?;
        Ok((
            p["port"].as_str().context("port name")?.to_string(),
            p[field].as_u64().context("port counter")?,
        ))
    };
    let (reason, kernel, userspace) = poll(
        "prometheus agrees with vnetctl stats",
        Duration::from_secs(30),
        || {
            let stats = w.vnetctl_json(&["stats"])?;
            let want_reason = stats["reasons"]["tc_hit_redirect"]
                .as_u64()
                .context("no tc_hit_redirect in vnetctl stats")?;
            let (name, want_kernel) = port(&stats, "kernel_packets")?;
            let (_, want_userspace) = port(&stats, "userspace_rx")?;
            let got_reason = query(
                &w,
                r#"vnet_packets_by_reason_total{reason="tc_hit_redirect"}"#,
            )?;
            let got_kernel = query(
                &w,
                &format!(r#"vnet_port_kernel_packets{{port="{name}",interface="vm1-h"}}"#),
            )?;
            let got_userspace = query(
                &w,
                &format!(r#"vnet_port_userspace_packets_total{{port="{name}",interface="vm1-h"}}"#),
            )?;
            let want = (
                Some(want_reason as f64),
                Some(want_kernel as f64),
                Some(want_userspace as f64),
            );
            Ok(
                ((got_reason, got_kernel, got_userspace) == want).then_some((
                    want_reason,
                    want_kernel,
                    want_userspace,
                )),
            )
        },
    )?;
    assert!(reason >= u64::from(2 * PINGS - 2), "{reason} redirects");
    // vm1 sent PINGS echo requests; the first one (and its ARP) missed.
    assert!(
        kernel >= u64::from(PINGS - 1),
        "vm1-h's flows forwarded {kernel} of {PINGS} requests"
    );
    assert!(userspace >= 1, "vm1's first packets reached the worker");

    // The worker's load, the userspace bytes of a port, and the API's
    // latency by method (vnetctl stats above went through Counters).
    let text = w.http_get(&url)?;
    promtool_check(&text)?;
    let busy = text
        .lines()
        .find_map(|l| l.strip_prefix("vnet_worker_busy_seconds_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no vnet_worker_busy_seconds_total in:\n{text}"))?;
    assert!(busy > 0.0, "the worker was never busy: {busy}");
    let bytes = text
        .lines()
        .find(|l| l.starts_with("vnet_port_userspace_bytes_total{") && l.contains("vm1-h"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .with_context(|| format!("no userspace bytes for vm1-h in:\n{text}"))?;
    assert!(
        bytes >= 60 * userspace,
        "{bytes} bytes for {userspace} frames"
    );
    poll(
        "prometheus: an API latency sample for Counters",
        Duration::from_secs(30),
        || {
            let n = query(
                &w,
                r#"vnet_api_request_duration_seconds_count{method="Counters"}"#,
            )?;
            Ok(n.filter(|n| *n >= 1.0))
        },
    )?;

    // --log-format json: every line of the log is one JSON object.
    let (status, log) = w.stop_vnetd()?;
    assert!(status.success(), "{status}: {log}");
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("log line is not JSON: {line:?}"))?;
        assert!(v["level"].is_string(), "{line}");
        messages.push(v["message"].as_str().unwrap_or_default().to_string());
    }
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("serving metrics on http://127.0.0.1:9469")),
        "{messages:?}"
    );
    Ok(())
}

#[test]
fn a_metrics_address_beyond_loopback_needs_the_explicit_flag() -> Result<()> {
    if !have_root("a_metrics_address_beyond_loopback_needs_the_explicit_flag") {
        return Ok(());
    }
    let mut w = World::new("metrics-remote")?;
    quiet_guest(&mut w, "vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    let topology =
        w.topology_file("version: 1\nbridges:\n  b:\n    ports:\n      vm1: {interface: vm1-h}\n")?;
    let err = w
        .start_vnetd_args(&topology, &["--metrics", "0.0.0.0:9469"])
        .expect_err("vnetd must refuse a non-loopback metrics address");
    assert!(
        format!("{err:#}").contains("--metrics-allow-remote"),
        "{err:#}"
    );
    // With the flag it serves there (reachable on the namespace's loopback).
    w.start_vnetd_args(
        &topology,
        &["--metrics", "0.0.0.0:9469", "--metrics-allow-remote"],
    )?;
    let text = w.http_get("http://127.0.0.1:9469/metrics")?;
    assert!(text.contains("vnet_build_info"), "{text}");
    Ok(())
}

#[test]
fn version_names_the_crate_version_and_git_revision() -> Result<()> {
    let out = Command::new(vnetd_path()?).arg("--version").output()?;
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    // "vnetd 0.1.0 (git 1a2b3c4)"
    let (version, revision) = text
        .trim()
        .strip_prefix("vnetd ")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.split_once(" (git "))
        .with_context(|| format!("{text:?}"))?;
    assert!(
        version.split('.').count() == 3 && version.split('.').all(|n| n.parse::<u32>().is_ok()),
        "{text:?}"
    );
    assert!(
        revision == "unknown"
            || (revision.len() >= 7 && revision.chars().all(|c| c.is_ascii_hexdigit())),
        "{text:?}"
    );
    // Built in this checkout: the revision is git's (a commit since the
    // build would only make it older, never "unknown").
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Ok(git) = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(repo)
        .output()
    {
        if git.status.success() {
            assert_ne!(revision, "unknown", "{text:?}");
        }
    }
    Ok(())
}
