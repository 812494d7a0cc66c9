//! Static checks of the monitoring side of the compose stack.
//!
//! The end-to-end run cannot start Grafana on a machine without a container
//! registry, so what Grafana would load is checked here instead, without any
//! network:
//!
//! * every dashboard in `grafana/dashboards/` parses, has a unique uid, takes
//!   its datasource from a `$datasource` variable whose default is the uid
//!   that `grafana/provisioning/datasources/` provisions, and every panel has
//!   a title, a unit and at least one target with an expression;
//! * rate-like functions use `$__rate_interval`;
//! * the dashboard provider loads the directory that the compose file mounts;
//! * Prometheus scrapes every service of ours that the compose file defines;
//! * when `promtool` is on `PATH`: `promtool check config` accepts
//!   `prometheus/prometheus.yml`, and every dashboard expression parses (each
//!   one becomes a recording rule in a generated file for `promtool check
//!   rules`). Without promtool those two checks are skipped with a message.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The value of the first `key: value` line (YAML, flat scan) in `text`.
fn yaml_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let line = line.trim_start();
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        Some(rest.trim().trim_matches('"'))
    })
}

/// The uid of the provisioned Prometheus datasource.
fn provisioned_datasource_uid() -> String {
    let text = read("grafana/provisioning/datasources/prometheus.yml");
    assert_eq!(yaml_value(&text, "type"), Some("prometheus"));
    yaml_value(&text, "uid")
        .expect("the provisioned datasource has a fixed uid")
        .to_string()
}

struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let dir = repo().join("grafana/dashboards");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("grafana/dashboards exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected the smart-grid and causal-kv dashboards"
    );
    files
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            Dashboard {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            }
        })
        .collect()
}

/// Every panel, including those nested in collapsed rows; rows themselves
/// are layout, not panels.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            if p["type"] == "row" {
                walk(&p["panels"], out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every (panel or annotation title, expression) of a dashboard.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let annotations = dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let name = a["name"].as_str().unwrap_or("").to_string();
            Some((name, a["expr"].as_str()?.to_string()))
        });
    panels(dashboard)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_string();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_string())))
        })
        .chain(annotations)
        .collect()
}

/// An expression as Prometheus would receive it from Grafana.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
}

#[test]
fn dashboards_parse_and_have_unique_uids() {
    let mut uids = HashSet::new();
    for d in dashboards() {
        let uid = d.json["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{} has no uid", d.file));
        assert!(!uid.is_empty() && uid.len() <= 40, "{}: bad uid", d.file);
        assert!(uids.insert(uid.to_string()), "uid {uid} is used twice");
        assert!(d.json["title"].as_str().is_some_and(|t| !t.is_empty()));
    }
}

#[test]
fn dashboards_use_the_provisioned_datasource() {
    let uid = provisioned_datasource_uid();
    for d in dashboards() {
        let vars = d.json["templating"]["list"].as_array().unwrap_or_else(|| {
            panic!("{}: no template variables", d.file);
        });
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{}: no $datasource variable", d.file));
        assert_eq!(ds["type"], "datasource", "{}", d.file);
        assert_eq!(ds["query"], "prometheus", "{}", d.file);
        assert_eq!(
            ds["current"]["value"], uid,
            "{}: $datasource should default to the provisioned uid",
            d.file
        );

        for p in panels(&d.json) {
            let title = p["title"].as_str().unwrap_or("?");
            let mut refs = vec![&p["datasource"]];
            refs.extend(
                p["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| &t["datasource"]),
            );
            for r in refs {
                assert_eq!(
                    r["uid"], "${datasource}",
                    "{}: panel {title:?} must use the $datasource variable",
                    d.file
                );
            }
        }
    }
}

#[test]
fn every_panel_has_a_title_a_unit_and_a_target() {
    for d in dashboards() {
        let ps = panels(&d.json);
        assert!(!ps.is_empty(), "{} has no panels", d.file);
        let mut ids = HashSet::new();
        for p in ps {
            let title = p["title"].as_str().unwrap_or("");
            assert!(!title.is_empty(), "{}: a panel has no title", d.file);
            assert!(
                ids.insert(p["id"].as_u64()),
                "{}: panel id repeated at {title:?}",
                d.file
            );
            let unit = p["fieldConfig"]["defaults"]["unit"].as_str().unwrap_or("");
            assert!(!unit.is_empty(), "{}: panel {title:?} has no unit", d.file);
            let targets = p["targets"].as_array().map(Vec::len).unwrap_or(0);
            assert!(targets > 0, "{}: panel {title:?} has no target", d.file);
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap_or("");
                assert!(
                    !expr.trim().is_empty(),
                    "{}: panel {title:?} has an empty target",
                    d.file
                );
            }
        }
    }
}

#[test]
fn rates_use_the_rate_interval() {
    for d in dashboards() {
        for (title, expr) in expressions(&d.json) {
            for func in ["rate(", "irate(", "increase("] {
                let uses = expr.match_indices(func).count();
                let with_interval = expr.matches("[$__rate_interval])").count();
                if uses > 0 {
                    assert!(
                        with_interval >= uses,
                        "{}: panel {title:?}: {func}...) without [$__rate_interval]: {expr}",
                        d.file
                    );
                }
            }
        }
    }
}

#[test]
fn the_dashboards_named_in_the_issue_exist() {
    let titles: Vec<String> = dashboards()
        .iter()
        .map(|d| d.json["title"].as_str().unwrap().to_string())
        .collect();
    for want in ["Smart grid", "Causal KV store"] {
        assert!(
            titles.iter().any(|t| t == want),
            "no {want:?} dashboard in {titles:?}"
        );
    }
}

#[test]
fn the_grid_dashboard_shows_limits_and_curtailment() {
    let grid = dashboards()
        .into_iter()
        .find(|d| d.json["title"] == "Smart grid")
        .expect("grid dashboard");
    let exprs: Vec<String> = expressions(&grid.json).into_iter().map(|e| e.1).collect();
    for metric in [
        "substation_capacity_watts",
        "substation_requested_watts",
        "substation_committed_watts",
        "substation_sessions_curtailed",
        "substation_sessions_paused",
        "substation_limit_changes_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no panel or annotation of the grid dashboard uses {metric}"
        );
    }
}

#[test]
fn the_provider_loads_the_mounted_dashboards() {
    let provider = read("grafana/provisioning/dashboards/causal-grid.yml");
    let path = yaml_value(&provider, "path").expect("provider has a path");
    let compose = read("docker-compose.yml");
    assert!(
        compose.contains(&format!("./grafana/dashboards:{path}")),
        "docker-compose.yml should mount grafana/dashboards at {path}"
    );
    assert!(compose.contains("./grafana/provisioning:/etc/grafana/provisioning"));
    assert!(compose.contains("GF_AUTH_ANONYMOUS_ENABLED: \"true\""));
    let home = yaml_value(&compose, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH").unwrap();
    let home_file = Path::new(home).file_name().unwrap().to_string_lossy();
    assert!(repo().join("grafana/dashboards").join(&*home_file).exists());
}

/// Compose services built from our image, with the port each listens on.
///
/// A flat scan, not a YAML parser: top-level keys start at column 0, service
/// keys at two spaces under `services:`. A service is ours when it merges the
/// `*app` anchor; its port comes from `LISTEN_ADDR` in its own block or in an
/// anchor block (`x-...: &name`) that it merges.
fn our_services() -> Vec<(String, String)> {
    let compose = read("docker-compose.yml");
    // (top-level key or service name, anchor name if any, lines)
    let mut blocks: Vec<(String, Option<String>, Vec<&str>)> = Vec::new();
    let mut in_services = false;
    for line in compose.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') {
            let key = line.split(':').next().unwrap().to_string();
            in_services = key == "services";
            let anchor = line.split('&').nth(1).map(|a| a.trim().to_string());
            blocks.push((key, anchor, Vec::new()));
        } else if in_services && line.starts_with("  ") && !line[2..].starts_with(' ') {
            let key = line.trim().trim_end_matches(':').to_string();
            blocks.push((key, None, Vec::new()));
        } else if let Some(last) = blocks.last_mut() {
            last.2.push(line);
        }
    }
    // Nested anchors (`environment: &app-env`) count as their parent block's.
    let anchor_addr = |name: &str| {
        blocks.iter().find_map(|(_, anchor, lines)| {
            let own = anchor.as_deref() == Some(name)
                || lines.iter().any(|l| l.contains(&format!("&{name}")));
            if own {
                lines.iter().find_map(|l| yaml_value(l, "LISTEN_ADDR"))
            } else {
                None
            }
        })
    };
    let mut out = Vec::new();
    for (name, _, lines) in &blocks {
        if !lines.iter().any(|l| l.trim() == "<<: *app") {
            continue;
        }
        let addr = lines
            .iter()
            .find_map(|l| yaml_value(l, "LISTEN_ADDR"))
            .or_else(|| {
                lines
                    .iter()
                    .filter_map(|l| l.trim().strip_prefix("<<: *"))
                    .find_map(anchor_addr)
            })
            .unwrap_or_else(|| panic!("cannot find LISTEN_ADDR of service {name}"));
        out.push((name.clone(), addr.rsplit(':').next().unwrap().to_string()));
    }
    out
}

#[test]
fn prometheus_scrapes_every_service() {
    let config = read("prometheus/prometheus.yml");
    let services = our_services();
    assert!(
        services.len() >= 9,
        "expected 3 nodes, 4 substations, balancer and entry: {services:?}"
    );
    for (service, port) in services {
        assert!(
            config.contains(&format!("\"{service}:{port}\"")),
            "prometheus.yml does not scrape {service}:{port}"
        );
        assert!(
            config.contains(&format!("service: {service} ")),
            "the {service} target has no service label"
        );
    }
}

fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let Some(promtool) = promtool() else {
        println!("skipped: promtool is not on PATH (Debian package `prometheus`)");
        return;
    };
    let out = Command::new(promtool)
        .args([
            "check",
            "config",
            "prometheus/prometheus.yml",
            "prometheus/prometheus-swarm.yml",
        ])
        .current_dir(repo())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check config failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_parses_every_dashboard_expression() {
    let Some(promtool) = promtool() else {
        println!("skipped: promtool is not on PATH (Debian package `prometheus`)");
        return;
    };
    // One recording rule per expression; `check rules` parses each of them.
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut count = 0;
    for d in dashboards() {
        for (title, expr) in expressions(&d.json) {
            count += 1;
            let expr = serde_json::to_string(&as_promql(&expr)).unwrap();
            let comment = serde_json::to_string(&format!("{}: {title}", d.file)).unwrap();
            rules.push_str(&format!(
                "      - record: dashboard:expr{count}\n        expr: {expr}\n        labels: {{ panel: {comment} }}\n"
            ));
        }
    }
    let file = std::env::temp_dir().join(format!("dashboard-rules-{}.yml", std::process::id()));
    fs::write(&file, &rules).unwrap();
    let out = Command::new(promtool)
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("promtool runs");
    let _ = fs::remove_file(&file);
    assert!(
        out.status.success(),
        "promtool check rules failed on dashboard expressions:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("promtool parsed {count} dashboard expressions");
}

/// Services of `deploy/swarm/stack.yml` with a `command` (ours) and the
/// port of their `LISTEN_ADDR`.
fn swarm_services() -> Vec<(String, String, String)> {
    let stack = read("deploy/swarm/stack.yml");
    // LISTEN_ADDR ports of the anchored blocks (`x-kv-env: &kv-env`).
    let mut anchored = std::collections::HashMap::new();
    let mut anchor: Option<String> = None;
    for line in stack.lines() {
        if !line.starts_with(' ') {
            anchor = line.split_once(": &").map(|(_, a)| a.trim().to_string());
        } else if let (Some(a), Some(addr)) = (&anchor, line.trim().strip_prefix("LISTEN_ADDR: ")) {
            anchored.insert(a.clone(), addr.rsplit(':').next().unwrap().to_string());
        }
    }
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    let mut binary = None;
    let mut port = None;
    let flush = |out: &mut Vec<_>, c: &Option<String>, b: &Option<String>, p: &Option<String>| {
        if let (Some(c), Some(b)) = (c, b) {
            out.push((c.clone(), b.clone(), p.clone().unwrap_or_default()));
        }
    };
    let mut in_services = false;
    for line in stack.lines() {
        if !line.starts_with(' ') && !line.is_empty() && !line.starts_with('#') {
            in_services = line == "services:";
            continue;
        }
        if !in_services {
            continue;
        }
        if line.starts_with("  ") && !line.starts_with("   ") && line.trim_end().ends_with(':') {
            flush(&mut out, &current, &binary, &port);
            current = Some(line.trim().trim_end_matches(':').to_string());
            binary = None;
            port = None;
        } else if let Some(cmd) = line.trim().strip_prefix("command: [\"") {
            binary = Some(cmd.split('"').next().unwrap().to_string());
        } else if let Some(addr) = line.trim().strip_prefix("LISTEN_ADDR: ") {
            port = Some(addr.rsplit(':').next().unwrap().to_string());
        } else if let Some(a) = line.trim().strip_prefix("<<: *") {
            if port.is_none() {
                port = anchored.get(a).cloned();
            }
        }
    }
    flush(&mut out, &current, &binary, &port);
    out
}

#[test]
fn the_swarm_stack_is_scraped_found_by_dns_and_keeps_its_secret_in_a_file() {
    let stack = read("deploy/swarm/stack.yml");
    let prometheus = read("prometheus/prometheus-swarm.yml");
    let services = swarm_services();
    let names: Vec<&str> = services.iter().map(|(n, _, _)| n.as_str()).collect();
    for want in [
        "node1",
        "node2",
        "node3",
        "substation",
        "load_balancer",
        "charge_request",
    ] {
        assert!(names.contains(&want), "the stack has no {want}: {names:?}");
    }
    for (name, binary, port) in &services {
        assert!(!port.is_empty(), "{name} has no LISTEN_ADDR");
        // Every service of ours is scraped by DNS on its port.
        let block = prometheus
            .split("- job_name:")
            .find(|b| {
                b.contains(&format!("tasks.{name}]")) || b.contains(&format!("tasks.{name},"))
            })
            .unwrap_or_else(|| panic!("prometheus-swarm.yml does not find tasks.{name}"));
        assert!(
            block.contains(&format!("port: {port}")),
            "tasks.{name} scraped on another port than {port}"
        );
        // Liveness, for the KV nodes too: Swarm keeps a task out of DNS
        // until it is healthy, and KV nodes become ready only after they
        // have reached each other by name.
        assert!(
            stack.contains(&format!(
                "test: [\"CMD\", \"{binary}\", \"--health-check\"]"
            )),
            "{name} has no --health-check health check"
        );
    }
    // The balancer and the entry find their peers by DNS; substations are
    // told apart by host name, so scaling needs no edit.
    assert!(stack.contains("SUBSTATIONS: dns+http://tasks.substation:8000"));
    assert!(stack.contains("LOAD_BALANCER_URL: dns+http://tasks.load_balancer:7000"));
    assert!(stack.contains("hostname: \"substation-{{.Task.Slot}}\""));
    assert!(
        !stack.contains("SUBSTATION_ID"),
        "a fixed id would repeat across replicas"
    );
    // The cluster secret is a Docker secret read from a file, never a value.
    assert!(stack.contains("CLUSTER_SECRET_FILE: /run/secrets/cluster_secret"));
    assert!(
        !stack.contains("CLUSTER_SECRET:"),
        "the secret must not be an environment value"
    );
    // The published ports are the compose file's.
    for (published, target) in [(5001, 5000), (5002, 5000), (5003, 5000), (6000, 6000)] {
        let port = format!("target: {target}, published: {published}, protocol: tcp, mode: host");
        assert!(stack.contains(&port), "port {published} not published");
    }
    // Every config file the stack mounts exists.
    for line in stack.lines() {
        if let Some(path) = line.trim().strip_prefix("file: ../../") {
            assert!(repo().join(path).is_file(), "{path} is missing");
        }
    }
}
