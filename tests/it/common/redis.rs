//! A real redis-server started by the test on a free loopback port, killed on drop.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

static PREFIXES: AtomicU32 = AtomicU32::new(0);

/// A key prefix no other test (or process) uses.
pub fn unique_prefix() -> String {
    format!(
        "rxt{}_{}_",
        std::process::id(),
        PREFIXES.fetch_add(1, Ordering::Relaxed)
    )
}

use super::free_port;

/// A Redis deployment the tests run nodes on: one server, a cluster, or Sentinel.
pub trait Backend {
    /// Points `config` at this deployment.
    fn configure(&self, config: &mut rustaxum::config::Config);
    /// The variables that point a server process at it.
    fn env(&self) -> Vec<(&'static str, String)>;
    /// `PUBLISH channel payload` as another program (Laravel) would.
    fn publish(&self, channel: &str, payload: &str);
}

impl Backend for RedisServer {
    fn configure(&self, config: &mut rustaxum::config::Config) {
        config.redis.url = Some(self.url());
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("REDIS_URL", self.url())]
    }

    fn publish(&self, channel: &str, payload: &str) {
        redis_cli(self.port, &["PUBLISH", channel, payload]);
    }
}

impl Backend for RedisCluster {
    fn configure(&self, config: &mut rustaxum::config::Config) {
        self.configure_redis(&mut config.redis);
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("REDIS_CLUSTER_NODES", self.nodes().join(","))]
    }

    fn publish(&self, channel: &str, payload: &str) {
        redis_cli(self.ports[1], &["PUBLISH", channel, payload]);
    }
}

impl RedisServer {
    pub fn start() -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.child = Some(spawn_redis(self.port, &[]));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG")) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a `redis-cli` command against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Sends a signal by name (e.g. `STOP`, `CONT`) to the server process.
    pub fn signal(&self, name: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .args([&format!("-{name}"), &c.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{name} failed");
        }
    }

    /// Kills the server abruptly (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A plain Redis connection for the test's own commands.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port whose cluster-bus port (port + 10000) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = super::free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// A redis-server on `port` of loopback that keeps nothing on disk, with `extra` arguments.
fn spawn_redis(port: u16, extra: &[&str]) -> Child {
    let port = port.to_string();
    let mut args = vec![
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    args.extend(extra);
    redis_server(&args)
}

/// `redis-server args...`, its output discarded.
fn redis_server(args: &[&str]) -> Child {
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (apt-get install redis-server)")
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli must be installed (apt-get install redis-tools)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a `CLUSTER NODES` slot field (`5461`, or a range `5461-10923` into which a moved
/// slot next to the node's own merges) holds `slot`.
fn holds(field: &str, slot: u16) -> bool {
    match field.split_once('-') {
        Some((a, b)) => matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot)),
        None => field.parse::<u16>() == Ok(slot),
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Redis processes a test started and their working directory: killed and removed on drop.
struct Processes {
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Processes {
    fn new(kind: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rustaxum-{kind}-{}", unique_prefix()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            children: Vec::new(),
            dir,
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real Redis Cluster of three masters (no replicas) on free loopback ports, made with
/// `redis-cli --cluster create`; killed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    _processes: Processes,
    /// Each master's `redis-server` arguments after its port, to start it again.
    args: Vec<Vec<String>>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A cluster whose masters also take `extra` (e.g. `cluster-require-full-coverage no`).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut processes = Processes::new("cluster");
        let dir = processes.dir.clone();
        let ports: Vec<u16> = (0..3).map(|_| free_cluster_port()).collect();
        let mut args = Vec::new();
        for port in &ports {
            let conf = format!("nodes-{port}.conf");
            let these: Vec<String> = [
                "--dir",
                dir.to_str().unwrap(),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "2000",
            ]
            .into_iter()
            .chain(extra.iter().copied())
            .map(String::from)
            .collect();
            processes.children.push(spawn_redis(
                *port,
                &these.iter().map(String::as_str).collect::<Vec<_>>(),
            ));
            args.push(these);
        }
        let cluster = Self {
            ports,
            _processes: processes,
            args,
        };
        for port in &cluster.ports {
            wait_until("a cluster node did not start", || {
                redis_cli(*port, &["PING"]).trim() == "PONG"
            });
        }
        let addresses: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = redis_cli(cluster.ports[0], &create);
        assert!(out.contains("[OK]"), "redis-cli --cluster create failed: {out}");
        for port in &cluster.ports {
            wait_until("the cluster never became ok", || {
                redis_cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
        cluster
    }

    /// Points Redis settings at this cluster.
    pub fn configure_redis(&self, redis: &mut rustaxum::config::RedisConfig) {
        redis.cluster_nodes = self.nodes();
    }

    /// The seed nodes, as `REDIS_CLUSTER_NODES` takes them.
    pub fn nodes(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
    }

    /// SIGKILLs master `index` (it stays dead).
    pub fn kill(&mut self, index: usize) {
        let child = &mut self._processes.children[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts master `index` again after [`kill`](Self::kill) (it rejoins with its node
    /// file and its slots), and waits until the cluster is ok again.
    pub fn restart(&mut self, index: usize) {
        let args: Vec<&str> = self.args[index].iter().map(String::as_str).collect();
        self._processes.children[index] = spawn_redis(self.ports[index], &args);
        for port in &self.ports {
            wait_until("the cluster never became ok again", || {
                redis_cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            });
        }
    }

    /// `redis-cli` against master `index`, for the test's own commands.
    pub fn cli(&self, index: usize, args: &[&str]) -> String {
        redis_cli(self.ports[index], args)
    }

    /// `key`'s hash slot, as Redis computes it (`CLUSTER KEYSLOT`).
    pub fn keyslot(&self, key: &str) -> u16 {
        redis_cli(self.ports[0], &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap()
    }

    /// The port of the master that owns `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot = self.keyslot(key);
        let nodes = redis_cli(self.ports[0], &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let port: u16 = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            for range in &fields[8..] {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>()) {
                    if (lo..=hi).contains(&slot) {
                        return port;
                    }
                }
            }
        }
        panic!("no master owns slot {slot}: {nodes}");
    }
}

impl RedisCluster {
    /// Gives `slot` to master `to` (a slot without keys moves at once, as the last step of
    /// a resharding does), and waits until every master agrees.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let id = redis_cli(to, &["CLUSTER", "MYID"]).trim().to_string();
        let number = slot;
        let slot = slot.to_string();
        let mut order = vec![to];
        order.extend(self.ports.iter().copied().filter(|p| *p != to));
        for port in order {
            let out = redis_cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &id]);
            assert!(out.trim() == "OK", "CLUSTER SETSLOT on {port}: {out}");
        }
        for port in &self.ports {
            wait_until("the masters never agreed on the moved slot", || {
                redis_cli(*port, &["CLUSTER", "NODES"])
                    .lines()
                    .any(|l| l.starts_with(&id) && l.split_whitespace().skip(8).any(|r| holds(r, number)))
            });
        }
    }

    /// The shard channels with subscribers on master `port`.
    pub fn shard_channels_on(&self, port: u16) -> Vec<String> {
        redis_cli(port, &["PUBSUB", "SHARDCHANNELS"])
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// How many `SPUBLISH` commands master `port` ran.
    pub fn spublish_calls_on(&self, port: u16) -> u64 {
        redis_cli(port, &["INFO", "commandstats"])
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_spublish:calls="))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// A real Sentinel setup: a master, a replica of it and one Sentinel (quorum 1, a master
/// is down after 1 s), on free loopback ports; killed on drop.
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica_port: u16,
    pub sentinel_port: u16,
    _processes: Processes,
}

impl RedisSentinel {
    pub fn start() -> Self {
        let mut processes = Processes::new("sentinel");
        let dir = processes.dir.clone();
        let master = RedisServer::start();
        let replica_port = free_port();
        processes.children.push(spawn_redis(
            replica_port,
            &["--replicaof", "127.0.0.1", &master.port.to_string()],
        ));
        wait_until("the replica never caught up", || {
            redis_cli(replica_port, &["INFO", "replication"]).contains("master_link_status:up")
        });
        let sentinel_port = free_port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 5000\n",
                dir.display(),
                master.port
            ),
        )
        .unwrap();
        processes
            .children
            .push(redis_server(&[conf.to_str().unwrap(), "--sentinel"]));
        wait_until("Sentinel never saw the replica", || {
            redis_cli(sentinel_port, &["SENTINEL", "REPLICAS", "mymaster"]).contains(&replica_port.to_string())
        });
        Self {
            master,
            replica_port,
            sentinel_port,
            _processes: processes,
        }
    }

    /// The port of the master Sentinel names now.
    pub fn master_port(&self) -> u16 {
        let out = redis_cli(self.sentinel_port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]);
        out.lines().nth(1).and_then(|p| p.trim().parse().ok()).unwrap_or(0)
    }

    /// Kills the master (SIGKILL) and waits until Sentinel has promoted the replica.
    pub fn fail_over(&mut self) {
        self.master.kill();
        wait_until("Sentinel never promoted the replica", || {
            self.master_port() == self.replica_port
        });
        wait_until("the replica never became master", || {
            redis_cli(self.replica_port, &["INFO", "replication"]).contains("role:master")
        });
    }
}

impl Backend for RedisSentinel {
    fn configure(&self, config: &mut rustaxum::config::Config) {
        config.redis.sentinels = vec![format!("127.0.0.1:{}", self.sentinel_port)];
        config.redis.sentinel_master = "mymaster".into();
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REDIS_SENTINELS", format!("127.0.0.1:{}", self.sentinel_port)),
            ("REDIS_SENTINEL_MASTER", "mymaster".into()),
        ]
    }

    fn publish(&self, channel: &str, payload: &str) {
        redis_cli(self.master_port(), &["PUBLISH", channel, payload]);
    }
}
