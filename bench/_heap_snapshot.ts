/**
 * V8 heap snapshots (`node:v8` `writeHeapSnapshot`), summed by kind of
 * object, and the difference between two of them per connection: where an
 * idle connection's JavaScript heap goes.
 *
 * Pure TypeScript: no `Deno.*` calls.
 *
 * @module
 */

/** The parts of a `.heapsnapshot` file read here. */
export interface HeapSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

/** One kind of heap object: how many, and their own bytes. */
export interface HeapRow {
  /** V8's node type (`object`, `closure`, `array`, ...) and the constructor or name. */
  kind: string;
  count: number;
  bytes: number;
}

/** Types whose names are their contents (a string's text, a number's value): summed as one kind. */
const NAMELESS = new Set(["string", "concatenated string", "sliced string", "number", "code", "hidden"]);

/** Sums a snapshot's nodes by kind. */
export function summarize(snapshot: HeapSnapshot): Map<string, HeapRow> {
  const fields = snapshot.snapshot.meta.node_fields;
  const typeNames = snapshot.snapshot.meta.node_types[0];
  const width = fields.length;
  const typeAt = fields.indexOf("type");
  const nameAt = fields.indexOf("name");
  const sizeAt = fields.indexOf("self_size");
  const rows = new Map<string, HeapRow>();
  for (let i = 0; i < snapshot.nodes.length; i += width) {
    const type = typeNames[snapshot.nodes[i + typeAt]!]!;
    // Each scope has its own name ("system / Context / scope @123"); they are one kind.
    const name = NAMELESS.has(type) ? "" : snapshot.strings[snapshot.nodes[i + nameAt]!]!.replace(/ @\d+$/, "");
    const kind = name ? `${type} ${name}` : type;
    const row = rows.get(kind) ?? { kind, count: 0, bytes: 0 };
    row.count++;
    row.bytes += snapshot.nodes[i + sizeAt]!;
    rows.set(kind, row);
  }
  return rows;
}

/**
 * What `after` holds beyond `before`, divided by `per` (the connections
 * opened in between), largest first; kinds that changed by under
 * `minBytes` per connection are left out.
 */
export function perConnection(
  before: Map<string, HeapRow>,
  after: Map<string, HeapRow>,
  per: number,
  minBytes = 1,
): HeapRow[] {
  const rows: HeapRow[] = [];
  for (const kind of new Set([...before.keys(), ...after.keys()])) {
    const was = before.get(kind) ?? { kind, count: 0, bytes: 0 };
    const is = after.get(kind) ?? { kind, count: 0, bytes: 0 };
    rows.push({ kind, count: (is.count - was.count) / per, bytes: (is.bytes - was.bytes) / per });
  }
  return rows.filter((row) => Math.abs(row.bytes) >= minBytes).sort((a, b) => b.bytes - a.bytes);
}
