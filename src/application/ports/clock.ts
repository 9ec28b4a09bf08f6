/** The time commands are stamped with (the domain never reads a clock). */
export type Clock = () => Date;

/** New ids (UUIDs) for experiments created without an idempotency key. */
export type IdGenerator = () => string;
