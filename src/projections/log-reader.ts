import type { AnyEvent, Position, StoredEvent } from '../application/ports/event-store.js';
import type { LogPage, LogReader } from '../application/ports/log-reader.js';

/**
 * The pages of the log after `after` up to `upTo`, each read as soon as the one before it has arrived,
 * up to `ahead` pages before they are used: reading goes on while the caller works on a page.
 */
export async function* readAhead<E extends AnyEvent>(
  log: Pick<LogReader<E>, 'readRange'>,
  after: Position,
  upTo: Position,
  limit: number,
  ahead: number,
): AsyncGenerator<StoredEvent<E>[]> {
  type Page = LogPage<E>;
  const queue: Promise<Page>[] = [];
  let newest: Promise<Page> | undefined;
  const more = () => {
    while (queue.length < Math.max(ahead, 1)) {
      const previous = newest;
      const page: Promise<Page> = previous
        ? previous.then((p) => {
            const last = p.events[p.events.length - 1];
            return p.done || !last ? { events: [], done: true } : log.readRange(last.position, upTo, limit);
          })
        : log.readRange(after, upTo, limit);
      page.catch(() => undefined); // awaited (and thrown) in turn
      queue.push(page);
      newest = page;
    }
  };
  more();
  for (;;) {
    const page = await queue.shift()!;
    if (page.events.length > 0) {
      if (!page.done) more();
      yield page.events;
    }
    if (page.done || page.events.length === 0) return;
  }
}
