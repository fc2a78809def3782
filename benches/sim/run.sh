#!/bin/bash
# The simulator benchmarks of docs/benchmarks.md ("Sim issue"): three seeds per row.
# Release build first: cargo build --release --bin warden. WARDEN_BENCH_BIN=PATH runs another
# build (an A/B in one sitting); each row ends with the run's decision digest.
W=${WARDEN_BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/warden}
cd "$(dirname "$0")/../.."
r() { "$W" sim "$@" --no-shrink --json 2>/dev/null | python3 -c "import json,sys; v=json.load(sys.stdin); print(v['agents'], v['agent_steps'], round(v['agent_steps_per_sec']), v['wall_ms'], v['simulated_ms'], v.get('violation',{}).get('invariant','ok'), v.get('digest','')[:16])"; }
echo "== lean 10k"; for i in 1 2 3; do r --scenario benches/sim/steady.yaml --seed $i --agents 10000 --duration 1m; done
echo "== lean 100k"; for i in 1 2 3; do r --scenario benches/sim/steady.yaml --seed $i --agents 100000 --duration 20s; done
echo "== mixed 10k 2m"; for i in 1 2 3; do r --scenario mixed --seed $i --agents 10000 --duration 2m; done
echo "== mixed 1000 1h"; for i in 1 2 3; do s=$(date +%s.%N); r --scenario mixed --seed $i --agents 1000 --duration 1h; e=$(date +%s.%N); echo "process wall $(echo "$e - $s" | bc)"; done
echo "== CI set, release, one seed each"; for i in 1 2 3; do s=$(date +%s.%N); for sc in mixed adversarial crash-recovery overspend approvals; do "$W" sim --scenario $sc --seed $i --agents 60 --no-shrink >/dev/null 2>&1 || echo "FAIL $sc $i"; done; e=$(date +%s.%N); echo "set wall $(echo "$e - $s" | bc)"; done
uptime
