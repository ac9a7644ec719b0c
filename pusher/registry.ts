/**
 * The connections of one pusher worker, indexed for the lookups a push
 * needs: by connection id (a targeted send), by socket (a client's own
 * frames), and by user (everything a user has open).
 *
 * @module
 */

import type { ClientSocket } from "./socket.ts";

/** One open connection. */
export interface Connection {
  /** Its id within the worker: the second half of its address. */
  readonly id: number;
  readonly socket: ClientSocket;
  /** The token's subject, when the pusher checks tokens; else null. */
  readonly user: string | null;
  /**
   * Whether it was greeted. Before that it gets nothing: the greeting is
   * its first message, as in the original, and its address is nobody's yet.
   */
  readonly greeted: boolean;
}

/**
 * Open connections by id, socket and user. Ids count from 1 and are never
 * reused within a worker, so a stale address never reaches a newcomer.
 */
export class ConnectionRegistry<C extends Connection = Connection> {
  readonly #byId = new Map<number, C>();
  readonly #bySocket = new WeakMap<ClientSocket, C>();
  readonly #byUser = new Map<string, Set<C>>();
  #nextId = 1;

  /** How many are open. */
  get size(): number {
    return this.#byId.size;
  }

  /** How many distinct users have at least one open connection. */
  get users(): number {
    return this.#byUser.size;
  }

  /** The next connection's id; each call draws a new one. */
  nextId(): number {
    return this.#nextId++;
  }

  /** Adds an opened connection. */
  add(connection: C): void {
    this.#byId.set(connection.id, connection);
    this.#bySocket.set(connection.socket, connection);
    if (connection.user === null) return;
    let set = this.#byUser.get(connection.user);
    if (!set) this.#byUser.set(connection.user, set = new Set());
    set.add(connection);
  }

  /** Removes the connection of `socket`, and returns it; undefined if it was not here. */
  remove(socket: ClientSocket): C | undefined {
    const connection = this.#bySocket.get(socket);
    if (!connection || this.#byId.get(connection.id) !== connection) return undefined;
    this.#byId.delete(connection.id);
    this.#bySocket.delete(socket);
    if (connection.user !== null) {
      const set = this.#byUser.get(connection.user)!;
      set.delete(connection);
      if (set.size === 0) this.#byUser.delete(connection.user);
    }
    return connection;
  }

  /** The connection with this id. */
  get(id: number): C | undefined {
    return this.#byId.get(id);
  }

  /** The connection of this socket. */
  of(socket: ClientSocket): C | undefined {
    return this.#bySocket.get(socket);
  }

  /** The open connections of `user`. */
  ofUser(user: string): ReadonlySet<C> {
    return this.#byUser.get(user) ?? EMPTY;
  }

  /** Every open connection, in the order they opened. */
  values(): IterableIterator<C> {
    return this.#byId.values();
  }
}

const EMPTY: ReadonlySet<never> = new Set();
