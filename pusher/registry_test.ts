import assert from "node:assert/strict";
import { type Connection, ConnectionRegistry } from "./registry.ts";
import type { ClientSocket } from "./socket.ts";

function socket(): ClientSocket {
  return { send() {}, close() {}, bufferedAmount: 0, origin: null };
}

function open(registry: ConnectionRegistry, user: string | null): Connection {
  const connection = { id: registry.nextId(), socket: socket(), user, greeted: true };
  registry.add(connection);
  return connection;
}

Deno.test("connection registry finds a connection by id, by socket and by user", () => {
  const registry = new ConnectionRegistry();
  const anonymous = open(registry, null);
  const phone = open(registry, "alice");
  const laptop = open(registry, "alice");
  const bob = open(registry, "bob");
  assert.deepEqual([registry.size, registry.users], [4, 2]);
  assert.equal(registry.get(phone.id), phone);
  assert.equal(registry.of(laptop.socket), laptop);
  assert.deepEqual([...registry.ofUser("alice")], [phone, laptop]);
  assert.deepEqual([...registry.ofUser("carol")], []);
  assert.deepEqual([...registry.values()], [anonymous, phone, laptop, bob]);
});

Deno.test("connection registry forgets a closed connection everywhere, once, and never reuses its id", () => {
  const registry = new ConnectionRegistry();
  const phone = open(registry, "alice");
  const laptop = open(registry, "alice");
  assert.equal(registry.remove(phone.socket), phone);
  assert.equal(registry.remove(phone.socket), undefined, "a second close is not counted again");
  assert.equal(registry.get(phone.id), undefined);
  assert.deepEqual([...registry.ofUser("alice")], [laptop]);
  registry.remove(laptop.socket);
  assert.deepEqual([registry.size, registry.users], [0, 0]);
  assert.equal(open(registry, null).id, 3);
});
