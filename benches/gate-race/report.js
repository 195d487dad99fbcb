// The gate race's table: each run, then the medians per system and the
// ratios converge / Node-RED.   node report.js runs.jsonl
const fs = require("fs");
const runs = fs.readFileSync(process.argv[2], "utf8").split("\n").filter(Boolean).map(l => JSON.parse(l));
const median = (xs) => {
  const s = xs.filter(x => x != null).sort((a, b) => a - b);
  if (!s.length) return null;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fix = (x, d) => x === null || x === undefined ? "-" : x.toFixed(d);
const row = (cells) => "| " + cells.join(" | ") + " |";
console.log("\nEach run (uptime before it):");
console.log(row(["system", "run", "req/s", "p50 ms", "p99 ms", "all decisions at s", "CPU ms/event", "wrk + sink CPU ms/event", "machine busy", "peak RSS MiB", "bytes/decision", "counts", "commits > 25.6 ms", "load average"]));
console.log(row(Array(14).fill("---")));
// converge's journal commits over 25.6 ms and the bound the longest stayed
// under: an fsync stall holds every request waiting on that commit.
const slow = (c) => !c ? "-" : `${c.over_25_6_ms} of ${c.count}` +
  (c.over_25_6_ms ? ` (longest ${c.longest_under_ms === null ? "past the last bucket" : `< ${c.longest_under_ms.toFixed(1)} ms`})` : "");
for (const r of runs) {
  const load = (r.uptime.match(/load average: (.*)$/) || [, r.uptime])[1];
  console.log(row([r.system, r.run, fix(r.rps, 0), fix(r.p50_ms, 2), fix(r.p99_ms, 2), fix(r.all_decisions_s, 2),
    fix(r.cpu_ms_per_event, 3), fix(r.harness_cpu_ms_per_event, 3),
    r.machine_busy == null ? "-" : `${(100 * r.machine_busy).toFixed(0)}%`, fix(r.peak_rss_mib, 1), fix(r.decision_bytes, 0),
    r.counts_ok ? "ok" : "WRONG " + JSON.stringify(r.sink), slow(r.commits), load]));
}
const systems = ["node-red", "converge"];
const metrics = [["req/s", "rps", 0], ["p50 ms", "p50_ms", 2], ["p99 ms", "p99_ms", 2],
  ["all decisions at s", "all_decisions_s", 2], ["CPU ms/event", "cpu_ms_per_event", 3],
  ["wrk + sink CPU ms/event", "harness_cpu_ms_per_event", 3], ["peak RSS MiB", "peak_rss_mib", 1]];
const med = {};
for (const s of systems) {
  med[s] = {};
  for (const [, k] of metrics) med[s][k] = median(runs.filter(r => r.system === s).map(r => r[k]));
}
console.log("\nMedians, and converge / Node-RED:");
console.log(row(["", ...systems, "ratio", "spread (min-max) node-red", "spread converge"]));
console.log(row(Array(6).fill("---")));
for (const [name, k, d] of metrics) {
  const [a, b] = systems.map(s => med[s][k]);
  const spread = (s) => {
    const xs = runs.filter(r => r.system === s).map(r => r[k]).filter(x => x != null);
    return xs.length ? `${fix(Math.min(...xs), d)}-${fix(Math.max(...xs), d)}` : "-";
  };
  console.log(row([name, fix(a, d), fix(b, d), a && b !== null ? (b / a).toFixed(2) + "x" : "-", spread("node-red"), spread("converge")]));
}
// What 10x Node-RED's req/s would ask of converge on these cores: the CPU
// time per event the machine has at that rate, less what wrk and the sink
// take per event (as measured in converge's runs).
const cores = median(runs.map(r => r.cores));
const harness = med.converge.harness_cpu_ms_per_event;
if (cores && harness != null && med["node-red"].rps) {
  const rate = 10 * med["node-red"].rps;
  const budget = cores * 1000 / rate;
  console.log(`\nAt 10x Node-RED's req/s (${rate.toFixed(0)}/s), ${cores} cores have ${budget.toFixed(3)} ms of CPU per event; ` +
    `wrk and the sink take ${harness.toFixed(3)}, which leaves converge ${(budget - harness).toFixed(3)} ms per event ` +
    `(it used ${med.converge.cpu_ms_per_event.toFixed(3)}).`);
}
const bad = runs.filter(r => !r.counts_ok);
console.log(bad.length ? `\nWRONG COUNTS in ${bad.length} run(s): see runs.jsonl` : "\nEvery run: the sink's counts equal what events.js expected.");
console.log("converge's req/s counts acknowledgements (202 after the journal's fsync; decisions follow);");
console.log("Node-RED answers after its POST to the sink. 'all decisions at' is from the first request to the sink's last decision.");
