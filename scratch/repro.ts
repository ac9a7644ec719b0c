import { startService } from "../tests/_service.ts";
import { Client } from "../pusher/testing.ts";
for (let round = 0; round < 8; round++) {
  const start = await startService("start", ["channel:", "--port", "0", "pusher:", "--presence-channels", "room.*", "--log-level", "debug", "publisher:", "--port", "0"]);
  await start.waitForLine(/Ctrl-C stops all three/, 20_000);
  const t0 = performance.now();
  const client = new Client(4236);
  await client.address();
  await client.ask({ id: 1, subscribe: { channel: "room.1" } });
  let id = 1;
  const answers: string[] = [];
  while (true) {
    const a = JSON.stringify(await client.ask({ id: ++id, presence_stats: { channel: "room.1" } }));
    answers.push(`${Math.round(performance.now() - t0)}ms ${a}`);
    if (!a.includes('"code":503')) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  const last = answers.at(-1)!;
  console.log(round, answers.join(" | "));
  if (last.includes("partial")) console.log(start.lines.filter((l) => /hub|worker|presence|listening|subscri/.test(l)).join("\n"));
  await client[Symbol.asyncDispose]();
  await start.stop("SIGINT");
  await start[Symbol.asyncDispose]();
}
