//! `custos-loadtest`: the load-test harness operators run against any
//! endpoint. Its workloads (Redis and PostgreSQL clients built on
//! `custos-parsers`, open and closed loop, `compare`) are a feature of their
//! own and not in this build yet; until then `bench/redis_compare.sh` drives
//! `redis-benchmark` for the side-by-side comparison.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "custos-loadtest: the load-test harness is not in this build yet; \
         use bench/redis_compare.sh (redis-benchmark, side by side) meanwhile"
    );
    ExitCode::from(2)
}
