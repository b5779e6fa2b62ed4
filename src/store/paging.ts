// Keyset paging shared by both engines: each list query asks for one row more than the page holds.
import type { Page } from './store.ts';

/** One page from `limit + 1` rows: the extra row only says that another page exists. */
export function page<T>(rows: T[], limit: number): Page<T> {
  return { rows: rows.slice(0, limit), hasMore: rows.length > limit };
}
