/**
 * What the benchmark reads from `/proc`: CPU time and resident memory of
 * the processes it measures, and a description of the machine.
 *
 * Deno grants `/proc` only under `--allow-all`, even with `--allow-read=/proc`,
 * so the files are read through `cat`: the bench already holds `--allow-run`
 * to start the services, and this keeps it off `--allow-all`.
 *
 * @module
 */

/** The machine a run happened on. */
export interface Machine {
  /** `model name` from /proc/cpuinfo. */
  cpu: string;
  /** Logical cores. */
  cores: number;
  /** Deno's version. */
  deno: string;
  /** `Linux version X` from /proc/version. */
  kernel: string;
}

/** Reads files through `cat`; throws naming them when one is missing (a process gone). */
async function cat(paths: string[]): Promise<string> {
  const output = await new Deno.Command("cat", { args: paths, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  if (!output.success) {
    const reason = new TextDecoder().decode(output.stderr).trim();
    throw new Error(`Cannot read ${paths.join(" ")}: ${reason}`);
  }
  return new TextDecoder().decode(output.stdout);
}

/** Clock ticks per second, the unit of `utime` and `stime` in /proc/<pid>/stat. */
export async function clockTicksPerSecond(): Promise<number> {
  try {
    const output = await new Deno.Command("getconf", { args: ["CLK_TCK"], stdin: "null", stderr: "null" }).output();
    const ticks = Number(new TextDecoder().decode(output.stdout).trim());
    if (output.success && Number.isSafeInteger(ticks) && ticks > 0) return ticks;
  } catch { /* no getconf: Linux's USER_HZ is 100 everywhere in practice */ }
  return 100;
}

/**
 * CPU time (`utime` + `stime`, in clock ticks) the processes used so far,
 * all their threads included.
 */
export async function cpuTicks(pids: readonly number[]): Promise<number> {
  return (await cpuTicksEach(pids)).reduce((sum, ticks) => sum + ticks, 0);
}

/** {@linkcode cpuTicks} for each process, in the order of `pids`. */
export async function cpuTicksEach(pids: readonly number[]): Promise<number[]> {
  const text = await cat(pids.map((pid) => `/proc/${pid}/stat`));
  const each: number[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    // The command name (field 2) may hold spaces; fields count from after it.
    const fields = line.slice(line.lastIndexOf(")") + 2).split(" ");
    each.push(Number(fields[11]) + Number(fields[12]));
  }
  return each;
}

/**
 * Resident memory of the processes together, in KiB: all of it (`VmRSS`), or
 * only the anonymous part (`RssAnon`), which leaves out pages of files such
 * as the `deno` binary's code.
 */
export async function rssKiB(pids: readonly number[], field: "VmRSS" | "RssAnon" = "VmRSS"): Promise<number> {
  const text = await cat(pids.map((pid) => `/proc/${pid}/status`));
  let total = 0;
  for (const match of text.matchAll(new RegExp(`^${field}:\\s+(\\d+) kB$`, "gm"))) total += Number(match[1]);
  return total;
}

/** Resident memory (`VmRSS`) of each process, in KiB, in the order given. */
export async function rssKiBEach(pids: readonly number[]): Promise<number[]> {
  const text = await cat(pids.map((pid) => `/proc/${pid}/status`));
  const values = [...text.matchAll(/^VmRSS:\s+(\d+) kB$/gm)].map((match) => Number(match[1]));
  if (values.length !== pids.length) {
    throw new Error(`Cannot read VmRSS of ${pids.length} processes: got ${values.length}`);
  }
  return values;
}

/** Describes this machine: CPU model, cores, Deno version, kernel. */
export async function describeMachine(): Promise<Machine> {
  const [cpuinfo, version] = await Promise.all([
    cat(["/proc/cpuinfo"]).catch(() => ""),
    cat(["/proc/version"]).catch(() => ""),
  ]);
  return {
    cpu: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    cores: navigator.hardwareConcurrency,
    deno: Deno.version.deno,
    kernel: /^Linux version \S+/.exec(version)?.[0] ?? (version.trim() || "unknown"),
  };
}
