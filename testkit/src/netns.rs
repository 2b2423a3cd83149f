//! Test hosts in network namespaces, for Jepsen-style tests of real processes: each
//! node gets its own namespace and address on a private bridge (itself in a namespace
//! of its own), the test's own namespace gets one more address on that bridge (so it
//! can run a shared service such as etcd, and reach the nodes), and partitions are
//! iptables `DROP` rules inside a node's namespace. This kernel has no netem: delay
//! and loss stay in the project's loopback proxy.
//!
//! Needs root, `ip` (iproute2) and `iptables`; [`Net::create`] says why not and returns
//! `None` where they are missing, so that a test can skip loudly. Everything is
//! removed on drop.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Subnets (the third octet) of this process's live networks.
static LIVE_SUBNETS: Mutex<BTreeSet<u8>> = Mutex::new(BTreeSet::new());

/// A private network of namespaced nodes (see the module docs).
pub struct Net {
    prefix: String,
    subnet: u8,
    nodes: usize,
    created: Vec<String>,
    host_link: String,
}

/// Runs `ip`/`iptables`/… and fails with its output if it fails.
fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out)
}

/// Why namespaced tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    let uid = run("id", &["-u"]).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    if uid.as_deref() != Ok("0") {
        return Some("not running as root".into());
    }
    for tool in ["ip", "iptables"] {
        if run("sh", &["-c", &format!("command -v {tool}")]).is_err() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

impl Net {
    /// Creates `nodes` namespaced hosts on one bridge. `None` (with the reason printed
    /// loudly) where this machine cannot; a failure to set up after the checks passed
    /// panics with the failing command.
    pub fn create(nodes: usize) -> Option<Net> {
        assert!((1..=8).contains(&nodes), "1..=8 nodes");
        if let Some(why) = unavailable() {
            eprintln!("\n!!! SKIPPED: network-namespace test: {why} !!!\n");
            return None;
        }
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // The host side's subnet is in the shared namespace: distinct from every
        // other live network of this process (the set) and, very likely, from any
        // other test process's (the pid picks where the search starts).
        let subnet = {
            let mut live = LIVE_SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
            let start = (pid % 250) as u8;
            let free = (0..250u8)
                .map(|i| ((u16::from(start) + u16::from(i)) % 250 + 1) as u8)
                .find(|s| !live.contains(s));
            let Some(subnet) = free else {
                panic!("250 test networks alive at once");
            };
            live.insert(subnet);
            subnet
        };
        let prefix = format!("kt{pid}x{n}");
        let mut net = Net {
            host_link: format!("kth{}x{n}", pid % 100_000),
            prefix,
            subnet,
            nodes,
            created: Vec::new(),
        };
        if let Err(e) = net.build() {
            panic!("setting up the test network: {e}");
        }
        Some(net)
    }

    fn build(&mut self) -> Result<(), String> {
        let switch = format!("{}s", self.prefix);
        run("ip", &["netns", "add", &switch])?;
        self.created.push(switch.clone());
        let ip_in = |ns: &str, args: &[&str]| {
            let mut all = vec!["-n", ns];
            all.extend_from_slice(args);
            run("ip", &all).map(drop)
        };
        ip_in(&switch, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&switch, &["link", "set", "br0", "up"])?;
        for i in 0..self.nodes {
            let ns = self.namespace(i);
            run("ip", &["netns", "add", &ns])?;
            self.created.push(ns.clone());
            let port = format!("v{i}");
            ip_in(
                &switch,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            ip_in(&switch, &["link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", self.addr(i));
            ip_in(&ns, &["addr", "add", &addr, "dev", "eth0"])?;
            ip_in(&ns, &["link", "set", "eth0", "up"])?;
            ip_in(&ns, &["link", "set", "lo", "up"])?;
        }
        // The test's own namespace joins the bridge too.
        run(
            "ip",
            &[
                "link",
                "add",
                &self.host_link,
                "type",
                "veth",
                "peer",
                "name",
                "vh",
                "netns",
                &switch,
            ],
        )?;
        ip_in(&switch, &["link", "set", "vh", "master", "br0", "up"])?;
        let host = format!("{}/24", self.host_addr());
        run("ip", &["addr", "add", &host, "dev", &self.host_link])?;
        run("ip", &["link", "set", &self.host_link, "up"])?;
        Ok(())
    }

    /// Node `i`'s namespace name.
    pub fn namespace(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, i as u8 + 1)
    }

    /// The test's own address on the bridge (for a service every node reaches).
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.subnet, 254)
    }

    /// A command that runs `program` inside node `i`'s namespace (`ip netns exec`
    /// execs it, so the child's pid is the program's: signals reach it directly).
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.namespace(i), program]);
        c
    }

    fn iptables(&self, i: usize, args: &[&str]) {
        let ns = self.namespace(i);
        let mut all = vec!["netns", "exec", &ns, "iptables"];
        all.extend_from_slice(args);
        if let Err(e) = run("ip", &all) {
            panic!("node {i}: {e}");
        }
    }

    /// Node `i` no longer hears from nor reaches `addr` (both directions, dropped
    /// silently, as a cut cable).
    pub fn cut(&self, i: usize, addr: Ipv4Addr) {
        let a = addr.to_string();
        self.iptables(i, &["-A", "INPUT", "-s", &a, "-j", "DROP"]);
        self.iptables(i, &["-A", "OUTPUT", "-d", &a, "-j", "DROP"]);
    }

    /// Node `i` reaches nobody but itself.
    pub fn isolate(&self, i: usize) {
        self.iptables(i, &["-A", "INPUT", "-i", "eth0", "-j", "DROP"]);
        self.iptables(i, &["-A", "OUTPUT", "-o", "eth0", "-j", "DROP"]);
    }

    /// Removes every partition of node `i`.
    pub fn heal(&self, i: usize) {
        self.iptables(i, &["-F"]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // The host side of its veth goes with the switch's namespace.
        for ns in self.created.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
        }
        LIVE_SUBNETS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.subnet);
    }
}
