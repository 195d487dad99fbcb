// Reads `perf script` output (cpu-clock samples with call chains) of the
// daemon on stdin and prints where its CPU went: by thread, its own code
// against the kernel's, and the kernel's part by system call. kernel.sh
// runs it.
//
// A sample is the kernel's when its innermost frame is in
// [kernel.kallsyms]. Its system call is named from the kernel's frames
// (`__x64_sys_<name>`, `__do_sys_<name>`, `ksys_<name>`, `do_futex`) or, where the
// kernel inlined those away, from the C library's wrapper that made it (the
// first frame outside the kernel: `__GI___writev` is writev; `syscall` is
// libc's generic wrapper, through which Rust's locks and thread parking
// make their futex calls). A kernel sample with neither ran on no system
// call's behalf: an interrupt, a page fault or the scheduler switching
// threads.
"use strict";

const THREADS = [
  ["tokio-rt-worker", "tokio workers (HTTP in and out, dispatcher, plugin calls)"],
  ["converge-journa", "journal writer"],
  ["converge-proces", "processor (rules)"],
  ["converge-checkp", "checkpointer"],
];

function thread(comm) {
  const known = THREADS.find(([prefix]) => comm.startsWith(prefix));
  return known ? known[1] : "other threads";
}

function syscall(frames) {
  const kernel = frames.filter((f) => f.dso === "[kernel.kallsyms]");
  for (const f of kernel) {
    const m = /^(?:__x64_sys_|__do_sys_|ksys_)(\w+)/.exec(f.sym) || /^do_(futex|writev|fsync)$/.exec(f.sym);
    if (m) return m[1];
  }
  if (!kernel.some((f) => /^(entry_SYSCALL|do_syscall_64)/.test(f.sym))) {
    return "(no system call: interrupts, faults, scheduling)";
  }
  const user = frames.find((f) => f.dso !== "[kernel.kallsyms]");
  if (!user) return "(unknown system call)";
  return user.sym.replace(/^(__GI___|__libc_|__GI_|__)/, "").replace(/_nocancel$/, "");
}

function parse(text) {
  const samples = [];
  for (const block of text.split(/\n\s*\n/)) {
    const lines = block.split("\n").filter((l) => l.trim() !== "");
    if (lines.length === 0) continue;
    const head = /^(\S+)\s+\d+/.exec(lines[0]);
    if (!head) continue;
    const frames = lines.slice(1).map((l) => {
      const m = /^\s*[0-9a-f]+\s+(\S+?)(?:\+0x[0-9a-f]+)?\s+\((.*)\)\s*$/.exec(l);
      return m ? { sym: m[1], dso: m[2] } : { sym: "?", dso: "?" };
    });
    if (frames.length === 0) continue;
    samples.push({ thread: thread(head[1]), frames });
  }
  return samples;
}

function pct(n, total) {
  return `${((100 * n) / total).toFixed(1)}%`;
}

function main() {
  let text = "";
  process.stdin.setEncoding("utf8");
  process.stdin.on("data", (d) => (text += d));
  process.stdin.on("end", () => {
    const samples = parse(text);
    const total = samples.length;
    if (total === 0) {
      console.error("kernel.js: no samples in the input");
      process.exit(1);
    }
    const byThread = new Map();
    const bySyscall = new Map();
    let kernelTotal = 0;
    for (const s of samples) {
      const inKernel = s.frames[0].dso === "[kernel.kallsyms]";
      const t = byThread.get(s.thread) || { all: 0, kernel: 0 };
      t.all += 1;
      if (inKernel) {
        t.kernel += 1;
        kernelTotal += 1;
        const key = `${s.thread}\t${syscall(s.frames)}`;
        bySyscall.set(key, (bySyscall.get(key) || 0) + 1);
      }
      byThread.set(s.thread, t);
    }
    console.log(`the daemon's CPU, ${total} samples: its own code ${pct(total - kernelTotal, total)}, the kernel ${pct(kernelTotal, total)}`);
    console.log("");
    console.log("| thread | share of the daemon's CPU | of which in the kernel |");
    console.log("| --- | --- | --- |");
    for (const [name, t] of [...byThread].sort((a, b) => b[1].all - a[1].all)) {
      console.log(`| ${name} | ${pct(t.all, total)} | ${pct(t.kernel, total)} |`);
    }
    console.log("");
    console.log("the kernel's part by thread and system call (share of all the daemon's CPU):");
    console.log("");
    console.log("| thread | system call | share |");
    console.log("| --- | --- | --- |");
    const rows = [...bySyscall].sort((a, b) => b[1] - a[1]);
    for (const [key, n] of rows.filter(([, n]) => n / total >= 0.002)) {
      const [name, call] = key.split("\t");
      console.log(`| ${name} | ${call} | ${pct(n, total)} |`);
    }
    const rest = rows.filter(([, n]) => n / total < 0.002).reduce((sum, [, n]) => sum + n, 0);
    if (rest > 0) console.log(`| (the rest, each under 0.2%) | | ${pct(rest, total)} |`);
  });
}

main();
