//! Static checks of the container files, so that a broken `Dockerfile` or
//! compose file shows up in `cargo test` and not only in the slower
//! end-to-end run (`scripts/e2e-compose.sh`):
//!
//! * base images are pinned by tag in `ARG`s, and the runtime user is not
//!   root;
//! * the dependency layer copies only `Cargo.toml` and `Cargo.lock` before
//!   building, and the sources come after it;
//! * `.dockerignore` keeps `target/` out of the build context;
//! * every compose service that runs one of our binaries names a binary that
//!   exists and has a health check (`--ready-check` for KV nodes,
//!   `--health-check` for the others); the published ports are
//!   the documented ones; third-party images are pinned.

use std::fs;
use std::path::PathBuf;

fn read(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn binary_exists(name: &str) -> bool {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/bin")
        .join(format!("{name}.rs"))
        .exists()
}

#[test]
fn dockerfile_pins_bases_and_drops_root() {
    let docker = read("Dockerfile");
    let arg = |name: &str| {
        docker
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
            .unwrap_or_else(|| panic!("no ARG {name}=... in the Dockerfile"))
            .to_string()
    };
    let rust = arg("RUST_IMAGE");
    assert!(
        rust.starts_with("rust:") && !rust.ends_with(":latest"),
        "{rust}"
    );
    assert_eq!(arg("RUNTIME_IMAGE"), "debian:bookworm-slim");
    assert!(docker.contains("FROM ${RUST_IMAGE} AS builder"));
    assert!(docker.contains("FROM ${RUNTIME_IMAGE}"));

    let user = docker
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );
}

#[test]
fn dockerfile_caches_dependencies_apart_from_sources() {
    let docker = read("Dockerfile");
    let manifests = docker
        .find("COPY Cargo.toml Cargo.lock ./")
        .expect("a COPY of only the manifests");
    let deps_build = docker[manifests..]
        .find("cargo build --release --locked --lib")
        .map(|i| i + manifests)
        .expect("a dependency build after the manifests");
    let sources = docker.find("COPY . .").expect("a COPY of the sources");
    assert!(manifests < deps_build && deps_build < sources);
    assert!(docker[sources..].contains("cargo build --release --locked --bins"));

    let ignore = read(".dockerignore");
    assert!(ignore
        .lines()
        .any(|l| l.trim() == "target/" || l.trim() == "target"));
}

#[test]
fn compose_services_check_their_own_health() {
    let compose = read("docker-compose.yml");
    let mut ours = 0;
    // Each service block: from its two-space key to the next one.
    let lines: Vec<&str> = compose.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(command) = line.trim().strip_prefix("command: [\"") else {
            continue;
        };
        let binary = command.split('"').next().unwrap();
        assert!(
            binary_exists(binary),
            "compose runs {binary}, which is not a binary"
        );
        let block_end = lines[i..]
            .iter()
            .position(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
            .map(|n| n + i)
            .unwrap_or(lines.len());
        // A KV node is healthy once it serves data (`/ready`: recovered and,
        // if it started empty, rebuilt); the other services once they answer.
        let flag = match binary {
            "kv_node" => "--ready-check",
            _ => "--health-check",
        };
        let check = format!("test: [\"CMD\", \"{binary}\", \"{flag}\"]");
        assert!(
            lines[i..block_end].iter().any(|l| l.trim() == check),
            "the service running {binary} has no `{binary} {flag}` health check"
        );
        ours += 1;
    }
    assert_eq!(
        ours, 9,
        "3 nodes, 4 substations, the balancer and the entry"
    );
}

#[test]
fn compose_publishes_the_documented_ports() {
    let compose = read("docker-compose.yml");
    for port in [
        "5001:5000",
        "5002:5000",
        "5003:5000",
        "6000:6000",
        "7000:7000",
        "9090:9090",
        "3000:3000",
    ] {
        assert!(
            compose.contains(&format!("\"{port}\"")),
            "{port} is not published"
        );
    }
    for line in compose.lines() {
        if let Some(image) = line.trim().strip_prefix("image: ") {
            if !image.starts_with("causal-grid") {
                assert!(
                    image.contains(':') && !image.ends_with(":latest"),
                    "{image} should be pinned by tag"
                );
            }
        }
    }
}

#[test]
fn scripts_take_the_package_mirror_from_the_machine() {
    // The air-gapped image builds and the Compose v2 install read the Debian
    // mirror from apt's own configuration (scripts/apt-mirror.sh); an address
    // written into the repository would break on every other machine.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts");
    let mut checked = 0;
    for entry in fs::read_dir(&dir).expect("scripts/ is listable") {
        let path = entry.expect("directory entry").path();
        if path.extension().is_none_or(|e| e != "sh") {
            continue;
        }
        let text = fs::read_to_string(&path).expect("script is readable");
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                !(line.contains("http://") || line.contains("https://"))
                    || line.contains("localhost")
                    || line.contains("127.0.0.1"),
                "{} names a remote address: {line}",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "found only {checked} scripts");
    for script in ["airgap-images.sh", "compose-v2.sh"] {
        assert!(
            read(&format!("scripts/{script}")).contains("scripts/apt-mirror.sh"),
            "{script} reads the mirror through scripts/apt-mirror.sh"
        );
    }
}
