/**
 * The JSON value type every layer passes around.
 *
 * @module
 */

/** Any JSON value: what a message's `data` can carry. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
