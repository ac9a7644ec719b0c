/**
 * The pusher's channels and users against a model: random sequences of what
 * browsers and the backend do (subscribe and unsubscribe from either side,
 * for a connection or a user, connections that drop and come back), and after
 * each sequence, what users would see: which connections a publication to
 * each channel and each user reaches, what presence answers, and which bus
 * subjects the worker holds (a channel's only while it has a member here).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { addressOf, setUp } from "./_fake_setup.ts";
import type { FakeSocket } from "./fake_transport.ts";
import { channelSubject, type CommandBody, commandRoute, presenceQuery, userSubject } from "../shared/address.ts";
import { signJwt } from "../shared/jwt.ts";

const SECRET = "model-secret";
const CHANNELS = ["c1", "c2", "x1"] as const;
/** Each slot's user and what its token grants: alice twice, so a user has two connections. */
const SLOTS = [
  { user: "alice", channels: ["c*"] },
  { user: "alice", channels: ["c*"] },
  { user: "bob", channels: [] },
  { user: "carol", channels: ["c1"] },
] as const;
const USERS = ["alice", "bob", "carol"] as const;

type Action =
  | { kind: "subscribe" | "unsubscribe"; slot: number; channel: string }
  | { kind: "backend subscribe" | "backend unsubscribe"; slot: number; channel: string }
  | { kind: "user subscribe" | "user unsubscribe"; user: string; channel: string }
  | { kind: "drop" | "reconnect"; slot: number };

const slot = fc.nat({ max: SLOTS.length - 1 });
const channel = fc.constantFrom(...CHANNELS);
const action: fc.Arbitrary<Action> = fc.oneof(
  fc.record({ kind: fc.constantFrom("subscribe" as const, "unsubscribe" as const), slot, channel }),
  fc.record({ kind: fc.constantFrom("backend subscribe" as const, "backend unsubscribe" as const), slot, channel }),
  fc.record({
    kind: fc.constantFrom("user subscribe" as const, "user unsubscribe" as const),
    user: fc.constantFrom(...USERS),
    channel,
  }),
  fc.record({ kind: fc.constantFrom("drop" as const, "reconnect" as const), slot }),
);

/** What the model holds for a slot: its socket while open, and its channels. */
interface Slot {
  socket: FakeSocket | null;
  channels: Set<string>;
}

/** Lets the bus hand over what was published, and the pusher's own replies. */
function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** Whether a token with `patterns` lets its browser subscribe itself to `channel`. */
function grants(patterns: readonly string[], channel: string): boolean {
  return patterns.some((p) => p.endsWith("*") ? channel.startsWith(p.slice(0, -1)) : p === channel);
}

Deno.test("pusher: channels and users after any sequence of subscribes, unsubscribes, drops and reconnects, from browsers and the backend", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(action, { minLength: 1, maxLength: 25 }), async (actions) => {
      await using setup = setUp({ tokenSecret: SECRET });
      const connect = async (i: number): Promise<Slot> => {
        const { user, channels } = SLOTS[i]!;
        const token = signJwt({ sub: user, exp: Math.floor(Date.now() / 1000) + 60, channels }, SECRET);
        return { socket: await setup.connect(`/?token=${token}`), channels: new Set() };
      };
      const slots: Slot[] = [];
      for (let i = 0; i < SLOTS.length; i++) slots.push(await connect(i));
      const open = () => slots.filter((s) => s.socket !== null);
      const ofUser = (user: string) => slots.filter((s, i) => s.socket !== null && SLOTS[i]!.user === user);
      const request = async (route: { subject: string; data: unknown }) => {
        try {
          return (await setup.bus.request(route.subject, route.data as CommandBody)).replies;
        } catch (error) {
          return (error as Error).message;
        }
      };
      let id = 0;
      for (const step of actions) {
        const what = JSON.stringify(step);
        if (step.kind === "drop" || step.kind === "reconnect") {
          const s = slots[step.slot]!;
          if (step.kind === "drop") {
            s.socket?.drop();
            slots[step.slot] = { socket: null, channels: new Set() };
          } else if (s.socket === null) {
            slots[step.slot] = await connect(step.slot);
          }
          await settle();
          continue;
        }
        if (step.kind === "subscribe" || step.kind === "unsubscribe") {
          const s = slots[step.slot]!;
          if (s.socket === null) continue;
          const before = s.socket.sent.length;
          s.socket.receive(JSON.stringify({ id: ++id, [step.kind]: { channel: step.channel } }));
          await settle();
          const reply = s.socket.sent.slice(before).find((f) => f.startsWith(`{"id":${id},`));
          const allowed = step.kind === "unsubscribe" || s.channels.has(step.channel) ||
            grants(SLOTS[step.slot]!.channels, step.channel);
          if (allowed) {
            assert.equal(reply, `{"id":${id},"result":{}}`, what);
            if (step.kind === "subscribe") s.channels.add(step.channel);
            else s.channels.delete(step.channel);
          } else {
            assert.match(reply ?? "", /"error":\{"code":403,/, what);
          }
          continue;
        }
        const cmd = step.kind.endsWith(" subscribe") ? "subscribe" : "unsubscribe";
        if (step.kind === "user subscribe" || step.kind === "user unsubscribe") {
          const targets = ofUser(step.user);
          const replies = await request(
            commandRoute({ kind: "user", user: step.user }, { cmd, channel: step.channel }),
          );
          if (targets.length === 0) {
            assert.match(String(replies), /nobody subscribes/, what);
          } else {
            assert.deepEqual(replies, [{ connections: targets.length }], what);
          }
          for (const s of targets) s.channels[cmd === "subscribe" ? "add" : "delete"](step.channel);
        } else if (step.kind === "backend subscribe" || step.kind === "backend unsubscribe") {
          const s = slots[step.slot]!;
          const connectionId = s.socket ? addressOf(s.socket).connection : 999_999;
          const route = commandRoute(
            { kind: "connection", workerId: setup.pusher.workerId, connectionId },
            { cmd, channel: step.channel },
          );
          const replies = await request(route);
          assert.deepEqual(replies, [s.socket ? { ok: true } : { ok: false, error: "no such connection" }], what);
          s.channels[cmd === "subscribe" ? "add" : "delete"](step.channel);
        }
        await settle();
      }

      // What users see now: each channel's and each user's publications reach exactly the model's connections.
      for (const s of open()) s.socket!.sent.length = 0;
      for (const name of CHANNELS) {
        await setup.publish(channelSubject(name), { channel: name, data: `to ${name}` });
      }
      for (const user of USERS) await setup.publish(userSubject(user), { data: `to ${user}` });
      for (const [i, s] of slots.entries()) {
        if (s.socket === null) continue;
        const expected = [
          ...CHANNELS.filter((c) => s.channels.has(c)).map((c) => JSON.stringify({ channel: c, data: `to ${c}` })),
          `to ${SLOTS[i]!.user}`,
        ];
        assert.deepEqual(s.socket.sent, expected, `slot ${i} after ${JSON.stringify(actions)}`);
      }
      // Presence counts them, and the worker holds a channel's subject only while a member is here.
      for (const name of CHANNELS) {
        const members = open().filter((s) => s.channels.has(name));
        const [answer] = await request(presenceQuery({ q: "channel", channel: name })) as [
          { clients: number; users: string[] },
        ];
        assert.equal(answer.clients, members.length, `presence of ${name}`);
        const users = new Set(slots.flatMap((s, i) => s.socket && s.channels.has(name) ? [SLOTS[i]!.user] : []));
        assert.deepEqual(answer.users.sort(), [...users].sort(), `users of ${name}`);
        assert.equal(setup.pusherBus.subjects.includes(channelSubject(name)), members.length > 0, `subject of ${name}`);
      }
      for (const user of USERS) {
        const held = setup.pusherBus.subjects.includes(userSubject(user));
        assert.equal(held, ofUser(user).length > 0, `subject of ${user}`);
      }
    }),
    { seed: 1616, numRuns: 150 },
  );
});
