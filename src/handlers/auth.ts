import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { z } from 'zod';

/** Roles in increasing power: each may do what the ones before it may. */
export const ROLES = ['viewer', 'operator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface Principal {
  readonly sub: string;
  readonly role: Role;
  /** The token's `exp` (seconds since the epoch), when it has one: a long-lived connection ends there. */
  readonly exp?: number;
}

export const roleAtLeast = (have: Role, need: Role): boolean => ROLES.indexOf(have) >= ROLES.indexOf(need);

const claimsSchema = z.object({
  sub: z.string().min(1).max(256),
  role: z.enum(ROLES),
  exp: z.number().optional(),
});

export class AuthenticationError extends Error {
  readonly code = 'unauthenticated';
}

export interface TokenServiceOptions {
  /** Tokens remembered as verified (each until it expires); 0 verifies every time. */
  readonly cacheSize?: number;
  /** Milliseconds since the epoch; tests move it. */
  readonly now?: () => number;
}

/**
 * Verifies and mints the HS256 JWTs of the contract. Nothing but HS256 is accepted, `none` least of
 * all. A client sends the same token with every request: a token once verified is remembered, by its
 * exact text, until its `exp`, so its signature is checked once rather than on every request.
 */
export class TokenService {
  readonly #key: Uint8Array;
  readonly #cacheSize: number;
  readonly #now: () => number;
  readonly #verified = new Map<string, { readonly principal: Principal; readonly expiresAt: number }>();

  constructor(secret: string, options: TokenServiceOptions = {}) {
    this.#key = new TextEncoder().encode(secret);
    this.#cacheSize = options.cacheSize ?? 10_000;
    this.#now = options.now ?? Date.now;
  }

  async verify(token: string): Promise<Principal> {
    const known = this.#verified.get(token);
    if (known) {
      if (this.#now() < known.expiresAt) return known.principal;
      this.#verified.delete(token); // expired: jose says so below
    }
    try {
      const { payload } = await jwtVerify(token, this.#key, {
        algorithms: ['HS256'],
        currentDate: new Date(this.#now()),
      });
      const claims = claimsSchema.safeParse(payload);
      if (!claims.success) {
        throw new AuthenticationError(
          `token claims: ${claims.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
        );
      }
      const principal: Principal = claims.data;
      if (this.#cacheSize > 0) {
        if (this.#verified.size >= this.#cacheSize)
          this.#verified.delete(this.#verified.keys().next().value!);
        const expiresAt = principal.exp === undefined ? Number.POSITIVE_INFINITY : principal.exp * 1000;
        this.#verified.set(token, { principal, expiresAt });
      }
      return principal;
    } catch (err) {
      if (err instanceof AuthenticationError) throw err;
      if (err instanceof joseErrors.JWTExpired) throw new AuthenticationError('token expired');
      if (err instanceof joseErrors.JOSEAlgNotAllowed)
        throw new AuthenticationError('token algorithm not allowed (HS256 only)');
      if (err instanceof joseErrors.JOSEError) throw new AuthenticationError(`invalid token: ${err.code}`);
      throw new AuthenticationError('invalid token');
    }
  }

  /** @param ttlSeconds omitted: no expiry. */
  async mint(principal: Principal, ttlSeconds?: number): Promise<string> {
    let jwt = new SignJWT({ role: principal.role })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(principal.sub)
      .setIssuedAt(Math.floor(this.#now() / 1000));
    if (ttlSeconds !== undefined) jwt = jwt.setExpirationTime(Math.floor(this.#now() / 1000) + ttlSeconds);
    return jwt.sign(this.#key);
  }
}

/** Parses a TTL such as `90s`, `15m`, `1h`, `7d` (or bare seconds) into seconds. */
export function parseTtl(ttl: string): number {
  const m = /^(\d+)\s*([smhd]?)$/.exec(ttl.trim());
  if (!m) throw new Error(`'${ttl}' is not a duration (use e.g. 90s, 15m, 1h, 7d)`);
  const n = Number(m[1]);
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  if (n <= 0) throw new Error('the duration must be positive');
  return n * unit;
}
