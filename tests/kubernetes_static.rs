//! Static checks of the Kubernetes manifests in `deploy/kubernetes/`, so a
//! broken wiring shows up in `cargo test`, without a cluster or `kubectl`
//! (`scripts/k8s-validate.sh` checks the same files against the API schemas):
//!
//! * the kustomization lists every manifest, and the files it generates the
//!   Secret and the Prometheus ConfigMap from exist;
//! * every Deployment/StatefulSet selector matches its pod template, and
//!   every Service, PodDisruptionBudget and NetworkPolicy selects a workload
//!   (a Service's target port is one of that workload's ports);
//! * every container that runs one of our binaries gets each variable the
//!   binary requires (read off `required(...)` in `src/service/`, plus the
//!   cluster addresses), sets no variable the binary does not read, and its
//!   service addresses (`PEERS`, `dns+http://...`) name Services and ports of
//!   these manifests;
//! * probes are `httpGet` on routes the binary serves (read off its
//!   `configure` function in `src/http/`): readiness on `/ready` for KV
//!   nodes, `/health` for the rest; liveness on `/health`; probe port, the
//!   container port and `LISTEN_ADDR` agree;
//! * every container has requests and limits, runs as a non-root user with
//!   a read-only root file system, no privilege escalation and no
//!   capabilities; the KV nodes keep their data on a per-pod volume.
//!
//! The manifests are parsed as YAML (serde_norway), not scanned line by line.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

const NAMESPACE: &str = "causal-grid";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse_all(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn kustomization() -> Value {
    parse_all(&dir().join("kustomization.yaml"))
        .pop()
        .expect("kustomization.yaml has a document")
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().expect("a list of strings").to_string())
        .collect()
}

/// Every object of the manifests the kustomization lists.
fn objects() -> Vec<Value> {
    let objects: Vec<Value> = str_list(&kustomization()["resources"])
        .iter()
        .flat_map(|file| parse_all(&dir().join(file)))
        .collect();
    assert!(objects.len() >= 10, "only {} objects", objects.len());
    objects
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("?")
}

fn of_kind<'a>(objects: &'a [Value], k: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == k).collect()
}

fn workloads(objects: &[Value]) -> Vec<&Value> {
    objects
        .iter()
        .filter(|o| matches!(kind(o), "Deployment" | "StatefulSet"))
        .collect()
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => panic!("label {k:?} is not a string: {other:?}"),
            };
            (k.as_str().expect("string keys").to_string(), value)
        })
        .collect()
}

fn template_labels(workload: &Value) -> BTreeMap<String, String> {
    string_map(&workload["spec"]["template"]["metadata"]["labels"])
}

/// Whether `selector` is non-empty and every pair of it is in `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn containers(workload: &Value) -> Vec<&Value> {
    workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{} has no containers", name(workload)))
        .iter()
        .collect()
}

/// The binary a container runs, when it is one of ours.
fn binary(container: &Value) -> Option<String> {
    let first = container["command"][0].as_str()?;
    repo()
        .join("src/bin")
        .join(format!("{first}.rs"))
        .exists()
        .then(|| first.to_string())
}

/// `(name, value or None when it comes from valueFrom)` of a container.
fn env(container: &Value) -> BTreeMap<String, Option<String>> {
    container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .map(|e| {
            let n = e["name"].as_str().expect("env name").to_string();
            let value = match &e["value"] {
                Value::String(s) => Some(s.clone()),
                Value::Null => {
                    assert!(!e["valueFrom"].is_null(), "{n} has no value");
                    None
                }
                other => panic!("{n}: env values must be strings, not {other:?}"),
            };
            (n, value)
        })
        .collect()
}

/// A container's ports by name, and the list of numbers.
fn ports(container: &Value) -> (BTreeMap<String, u64>, Vec<u64>) {
    let mut named = BTreeMap::new();
    let mut numbers = Vec::new();
    for p in container["ports"].as_sequence().into_iter().flatten() {
        let n = p["containerPort"].as_u64().expect("containerPort");
        numbers.push(n);
        if let Some(name) = p["name"].as_str() {
            named.insert(name.to_string(), n);
        }
    }
    (named, numbers)
}

/// A port reference (number or name) resolved against a container's ports.
fn resolve_port(port: &Value, container: &Value) -> Option<u64> {
    let (named, numbers) = ports(container);
    match port {
        Value::Number(n) => n.as_u64().filter(|n| numbers.contains(n)),
        Value::String(s) => named.get(s).copied(),
        _ => None,
    }
}

/// Every Rust source file under `rel`, concatenated.
fn sources(rel: &str) -> String {
    fn walk(dir: &Path, out: &mut String) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&fs::read_to_string(&p).unwrap());
            }
        }
    }
    let mut out = String::new();
    walk(&repo().join(rel), &mut out);
    out
}

/// The configuration module and the route table of each binary.
fn sources_of(binary: &str) -> (&'static str, &'static str) {
    match binary {
        "kv_node" => ("src/service/kv", "src/http/kv.rs"),
        "substation" => ("src/service/substation.rs", "src/http/grid/substation.rs"),
        "load_balancer" => ("src/service/balancer.rs", "src/http/grid/balancer.rs"),
        "charge_request" => ("src/service/entry.rs", "src/http/grid/entry.rs"),
        other => panic!("no known configuration for binary {other}"),
    }
}

fn read_rel(rel: &str) -> String {
    if repo().join(rel).is_dir() {
        sources(rel)
    } else {
        read(&repo().join(rel))
    }
}

/// Quoted strings in `text` that directly follow one of `prefixes`.
fn quoted_after(text: &str, prefixes: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in prefixes {
        for (i, _) in text.match_indices(prefix) {
            let rest = &text[i + prefix.len()..];
            if let Some(end) = rest.find('"') {
                out.insert(rest[..end].to_string());
            }
        }
    }
    out
}

/// The variables a binary's `Config::from_env` requires.
fn required_vars(binary: &str) -> BTreeSet<String> {
    let config = read_rel(sources_of(binary).0);
    // `required("NODE_ID")` and `required::<String>("PEERS")`.
    let mut vars = quoted_after(&config, &["required(\""]);
    for (i, _) in config.match_indices("required::<") {
        let rest = &config[i..];
        if let Some(start) = rest.find(">(\"") {
            let rest = &rest[start + 3..];
            vars.insert(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    // The entry's balancer address has a default (localhost), which is
    // wrong in any cluster.
    if binary == "charge_request" {
        vars.insert("LOAD_BALANCER_URL".into());
    }
    vars
}

/// Every variable name a binary's configuration mentions.
fn known_vars(binary: &str) -> String {
    format!(
        "{}{}",
        read_rel(sources_of(binary).0),
        read(&repo().join("src/service/env.rs"))
    )
}

/// The paths a binary's `configure` function serves.
fn routes(binary: &str) -> BTreeSet<String> {
    let table = read_rel(sources_of(binary).1);
    let routes = quoted_after(&table, &["route(\"", "resource(\""]);
    assert!(routes.contains("/health"), "{binary}: {routes:?}");
    routes
}

/// Every (workload, container, binary) that runs one of our binaries.
fn ours(objects: &[Value]) -> Vec<(&Value, &Value, String)> {
    let mut out = Vec::new();
    for w in workloads(objects) {
        for c in containers(w) {
            if let Some(b) = binary(c) {
                out.push((w, c, b));
            }
        }
    }
    out
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let k = kustomization();
    assert_eq!(k["namespace"].as_str(), Some(NAMESPACE));
    let listed: BTreeSet<String> = str_list(&k["resources"]).into_iter().collect();
    let mut present = BTreeSet::new();
    for entry in fs::read_dir(dir()).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        if file.ends_with(".yaml") && file != "kustomization.yaml" {
            present.insert(file);
        }
    }
    assert_eq!(listed, present, "resources: vs the .yaml files beside it");
    for generator in ["secretGenerator", "configMapGenerator"] {
        for g in k[generator].as_sequence().expect(generator) {
            for file in str_list(&g["files"]) {
                let file = file.rsplit('=').next().unwrap();
                assert!(dir().join(file).is_file(), "{generator}: no file {file}");
            }
        }
    }
    let objects = objects();
    let namespaces = of_kind(&objects, "Namespace");
    assert_eq!(namespaces.len(), 1);
    assert_eq!(name(namespaces[0]), NAMESPACE);
    for o in &objects {
        if let Some(ns) = o["metadata"]["namespace"].as_str() {
            assert_eq!(ns, NAMESPACE, "{} {}", kind(o), name(o));
        }
    }
}

#[test]
fn workload_selectors_match_their_templates() {
    let objects = objects();
    let ws = workloads(&objects);
    assert!(ws.len() >= 5, "kv, substation, balancer, entry, prometheus");
    for w in ws {
        let selector = string_map(&w["spec"]["selector"]["matchLabels"]);
        assert!(
            selects(&selector, &template_labels(w)),
            "{} {}: selector {selector:?} does not match its pod template",
            kind(w),
            name(w)
        );
    }
}

#[test]
fn services_and_policies_select_a_workload() {
    let objects = objects();
    let ws = workloads(&objects);
    for s in of_kind(&objects, "Service") {
        let selector = string_map(&s["spec"]["selector"]);
        let target = ws
            .iter()
            .find(|w| selects(&selector, &template_labels(w)))
            .unwrap_or_else(|| panic!("Service {} selects no workload", name(s)));
        for p in s["spec"]["ports"].as_sequence().expect("ports") {
            let target_port = if p["targetPort"].is_null() {
                &p["port"]
            } else {
                &p["targetPort"]
            };
            assert!(
                containers(target)
                    .iter()
                    .any(|c| resolve_port(target_port, c).is_some()),
                "Service {}: target port {target_port:?} is not a port of {}",
                name(s),
                name(target)
            );
        }
    }
    for (k, path) in [
        (
            "PodDisruptionBudget",
            &["spec", "selector", "matchLabels"][..],
        ),
        ("NetworkPolicy", &["spec", "podSelector", "matchLabels"][..]),
    ] {
        for o in of_kind(&objects, k) {
            let selector = string_map(path.iter().fold(o, |v: &Value, key| &v[*key]));
            assert!(
                ws.iter().any(|w| selects(&selector, &template_labels(w))),
                "{k} {} selects no workload",
                name(o)
            );
        }
    }
}

#[test]
fn every_binary_gets_the_variables_it_requires() {
    let objects = objects();
    let ours = ours(&objects);
    let binaries: BTreeSet<&str> = ours.iter().map(|(_, _, b)| b.as_str()).collect();
    assert_eq!(
        binaries,
        BTreeSet::from(["charge_request", "kv_node", "load_balancer", "substation"])
    );
    for (w, c, b) in &ours {
        let env = env(c);
        for var in required_vars(b) {
            assert!(env.contains_key(&var), "{}: {b} requires {var}", name(w));
        }
        let known = known_vars(b);
        // `secret("X")` reads X or X_FILE.
        let secret_files: BTreeSet<String> = quoted_after(&known, &["secret(\""])
            .into_iter()
            .map(|s| format!("{s}_FILE"))
            .collect();
        for var in env.keys() {
            assert!(
                var == "RUST_LOG"
                    || known.contains(&format!("\"{var}\""))
                    || secret_files.contains(var),
                "{}: {b} does not read {var}",
                name(w)
            );
        }
        if b == "kv_node" {
            let secrets = ["CLUSTER_SECRET", "CLUSTER_SECRET_FILE"];
            let set = secrets.iter().filter(|s| env.contains_key(**s)).count();
            assert_eq!(set, 1, "{}: set one of {secrets:?}", name(w));
        }
    }
}

/// The headless Service and port a `dns+http://name.ns.svc.cluster.local:port`
/// or `http://...` address names, checked against the manifests.
fn check_address(objects: &[Value], address: &str, headless: bool) -> String {
    let rest = address
        .strip_prefix("dns+http://")
        .or_else(|| address.strip_prefix("http://"))
        .unwrap_or_else(|| panic!("{address}: not an http or dns+http address"));
    let (host, port) = rest.rsplit_once(':').expect("host:port");
    let port: u64 = port.parse().expect("a port number");
    let suffix = format!(".{NAMESPACE}.svc.cluster.local");
    let host = host
        .strip_suffix(&suffix)
        .unwrap_or_else(|| panic!("{address}: not a name in {NAMESPACE}"));
    // `kv-0.kv` is pod kv-0 of the headless Service kv.
    let service_name = host.rsplit('.').next().unwrap();
    let service = of_kind(objects, "Service")
        .into_iter()
        .find(|s| name(s) == service_name)
        .unwrap_or_else(|| panic!("{address}: no Service {service_name}"));
    if headless {
        assert_eq!(
            service["spec"]["clusterIP"].as_str(),
            Some("None"),
            "{address}: Service {service_name} must be headless (one record per pod)"
        );
    }
    let selector = string_map(&service["spec"]["selector"]);
    let workload = workloads(objects)
        .into_iter()
        .find(|w| selects(&selector, &template_labels(w)))
        .unwrap();
    assert!(
        containers(workload)
            .iter()
            .any(|c| ports(c).1.contains(&port)),
        "{address}: {} does not listen on {port}",
        name(workload)
    );
    host.to_string()
}

#[test]
fn service_addresses_name_services_of_the_manifests() {
    let objects = objects();
    for (w, c, b) in ours(&objects) {
        let env = env(c);
        match b.as_str() {
            "load_balancer" => {
                let v = env["SUBSTATIONS"].as_deref().unwrap();
                assert!(v.starts_with("dns+http://"), "{v}: found by DNS");
                check_address(&objects, v, true);
            }
            "charge_request" => {
                let v = env["LOAD_BALANCER_URL"].as_deref().unwrap();
                for target in v.split(',') {
                    check_address(&objects, target.trim(), target.starts_with("dns+"));
                }
            }
            "kv_node" => {
                let replicas = w["spec"]["replicas"].as_u64().unwrap();
                let service = w["spec"]["serviceName"].as_str().unwrap();
                let peers = env["PEERS"].as_deref().unwrap();
                let entries: Vec<&str> = peers.split(',').collect();
                assert_eq!(entries.len() as u64, replicas, "PEERS lists every node");
                for (i, entry) in entries.iter().enumerate() {
                    let (id, url) = entry.split_once('=').expect("ID=URL");
                    assert_eq!(id, i.to_string(), "{peers}");
                    let host = check_address(&objects, url, true);
                    assert_eq!(host, format!("{}-{i}.{service}", name(w)), "{url}");
                }
                let headless = of_kind(&objects, "Service")
                    .into_iter()
                    .find(|s| name(s) == service)
                    .unwrap();
                // Nodes of a new cluster are ready only after reaching each
                // other, so their names must resolve before they are ready.
                assert_eq!(
                    headless["spec"]["publishNotReadyAddresses"].as_bool(),
                    Some(true),
                    "Service {service}"
                );
                let node_id = c["env"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == "NODE_ID")
                    .unwrap();
                assert_eq!(
                    node_id["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
                    Some("metadata.labels['apps.kubernetes.io/pod-index']"),
                    "NODE_ID is the pod's ordinal"
                );
            }
            _ => {}
        }
    }
}

#[test]
fn probes_use_routes_the_binaries_serve_on_their_port() {
    let objects = objects();
    for (w, c, b) in ours(&objects) {
        let served = routes(&b);
        let listen = env(c)["LISTEN_ADDR"]
            .clone()
            .unwrap_or_else(|| panic!("{}: LISTEN_ADDR is set", name(w)));
        let listen_port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
        assert_eq!(
            ports(c).1,
            vec![listen_port],
            "{}: the container port is LISTEN_ADDR's",
            name(w)
        );
        let ready = if b == "kv_node" { "/ready" } else { "/health" };
        for (probe, want) in [("readinessProbe", ready), ("livenessProbe", "/health")] {
            let get = &c[probe]["httpGet"];
            let path = get["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no httpGet {probe}", name(w)));
            assert_eq!(path, want, "{}: {probe}", name(w));
            assert!(served.contains(path), "{b} does not serve {path}");
            assert_eq!(
                resolve_port(&get["port"], c),
                Some(listen_port),
                "{}: {probe} port",
                name(w)
            );
        }
        let annotations = string_map(&w["spec"]["template"]["metadata"]["annotations"]);
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], listen_port.to_string());
        assert!(served.contains(&annotations["prometheus.io/path"]));
        // The dashboards select on the compose stack's job names.
        assert_eq!(annotations["prometheus.io/job"], b);
    }
}

#[test]
fn every_pod_is_limited_and_unprivileged() {
    let objects = objects();
    for w in workloads(&objects) {
        let pod = &w["spec"]["template"]["spec"];
        for c in containers(w) {
            let at = format!("{} {}/{}", kind(w), name(w), c["name"].as_str().unwrap());
            for side in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        !c["resources"][side][resource].is_null(),
                        "{at}: no {side}.{resource}"
                    );
                }
            }
            // The container's setting wins over the pod's.
            let setting = |key: &str| {
                let own = &c["securityContext"][key];
                if own.is_null() {
                    pod["securityContext"][key].clone()
                } else {
                    own.clone()
                }
            };
            assert_eq!(setting("runAsNonRoot").as_bool(), Some(true), "{at}");
            assert!(
                setting("runAsUser").as_u64().is_some_and(|u| u != 0),
                "{at}: runAsUser"
            );
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{at}");
            assert_eq!(
                sc["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{at}"
            );
            assert!(
                str_list(&sc["capabilities"]["drop"]).contains(&"ALL".to_string()),
                "{at}: capabilities.drop ALL"
            );
            if binary(c).is_some() {
                assert_eq!(
                    setting("runAsUser").as_u64(),
                    Some(10001),
                    "{at}: image uid"
                );
            }
        }
    }
}

#[test]
fn kv_nodes_keep_their_data_and_secret_on_volumes() {
    let objects = objects();
    let sets = of_kind(&objects, "StatefulSet");
    assert_eq!(sets.len(), 1);
    let kv = sets[0];
    assert_eq!(kv["spec"]["replicas"].as_u64(), Some(3));
    // OrderedReady would wait for kv-0 to be ready before starting kv-1.
    assert_eq!(kv["spec"]["podManagementPolicy"].as_str(), Some("Parallel"));
    let c = containers(kv)[0];
    let env = env(c);
    let mounts: BTreeMap<String, String> = c["volumeMounts"]
        .as_sequence()
        .expect("volume mounts")
        .iter()
        .map(|m| {
            (
                m["mountPath"].as_str().unwrap().to_string(),
                m["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    let data_dir = env["DATA_DIR"].clone().expect("DATA_DIR");
    let claims: Vec<&str> = kv["spec"]["volumeClaimTemplates"]
        .as_sequence()
        .expect("volumeClaimTemplates")
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        mounts
            .get(&data_dir)
            .is_some_and(|v| claims.contains(&v.as_str())),
        "DATA_DIR {data_dir} is a per-pod volume"
    );

    let file = env["CLUSTER_SECRET_FILE"].clone().expect("a secret file");
    let (mount_dir, key) = file.rsplit_once('/').unwrap();
    let volume_name = &mounts[mount_dir];
    let volume = kv["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some(volume_name))
        .unwrap();
    let secret = volume["secret"]["secretName"].as_str().expect("a Secret");
    let generated = kustomization()["secretGenerator"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|g| g["name"].as_str() == Some(secret))
        .unwrap_or_else(|| panic!("no secretGenerator {secret}"))
        .clone();
    assert!(
        str_list(&generated["files"])
            .iter()
            .any(|f| f.split('=').next() == Some(key) || f == key),
        "the Secret {secret} has no key {key}"
    );

    let budgets = of_kind(&objects, "PodDisruptionBudget");
    assert_eq!(budgets.len(), 1);
    assert_eq!(budgets[0]["spec"]["maxUnavailable"].as_u64(), Some(1));
}

#[test]
fn prometheus_matches_the_compose_stack_and_scrapes_by_annotation() {
    let objects = objects();
    let compose = read(&repo().join("docker-compose.yml"));
    let compose_image = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: prom/prometheus:"))
        .expect("compose runs Prometheus");
    let prometheus = workloads(&objects)
        .into_iter()
        .find(|w| name(w) == "prometheus")
        .expect("a prometheus Deployment");
    assert_eq!(
        containers(prometheus)[0]["image"].as_str(),
        Some(format!("prom/prometheus:{compose_image}").as_str())
    );
    let config = parse_all(&dir().join("prometheus.yml")).pop().unwrap();
    let sd = &config["scrape_configs"][0]["kubernetes_sd_configs"][0];
    assert_eq!(sd["role"].as_str(), Some("pod"));
    assert_eq!(str_list(&sd["namespaces"]["names"]), vec![NAMESPACE]);
    // It may list pods: a (Cluster)Role bound to its ServiceAccount.
    let account = prometheus["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("a service account");
    let binding = objects
        .iter()
        .filter(|o| matches!(kind(o), "RoleBinding" | "ClusterRoleBinding"))
        .find(|b| {
            b["subjects"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|s| s["name"].as_str() == Some(account))
        })
        .expect("a binding for Prometheus' service account");
    let role_name = binding["roleRef"]["name"].as_str().unwrap();
    let role = objects
        .iter()
        .find(|o| matches!(kind(o), "Role" | "ClusterRole") && name(o) == role_name)
        .expect("the bound role");
    let rule = &role["rules"][0];
    assert!(str_list(&rule["resources"]).contains(&"pods".to_string()));
    for verb in ["get", "list", "watch"] {
        assert!(str_list(&rule["verbs"]).contains(&verb.to_string()));
    }
}
