/**
 * RFC 9457 problem details: every error the API returns has this shape, built in one place.
 */
export interface FieldError {
  readonly path: string;
  readonly message: string;
}

export interface Problem {
  readonly type: string;
  readonly title: string;
  readonly status: number;
  readonly detail: string;
  readonly errors?: readonly FieldError[];
  readonly [extension: string]: unknown;
}

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  406: 'Not Acceptable',
  408: 'Request Timeout',
  409: 'Conflict',
  412: 'Precondition Failed',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  422: 'Unprocessable Content',
  428: 'Precondition Required',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

/** An error that the error handler turns into a problem response as it is. */
export class HttpProblem extends Error {
  constructor(
    readonly status: number,
    readonly slug: string,
    detail: string,
    readonly extra: {
      errors?: readonly FieldError[];
      headers?: Record<string, string>;
      [k: string]: unknown;
    } = {},
  ) {
    super(detail);
  }

  toProblem(): Problem {
    const { headers: _headers, ...rest } = this.extra;
    return {
      type: `https://phoenix.dev/problems/${this.slug}`,
      title: TITLES[this.status] ?? 'Error',
      status: this.status,
      detail: this.message,
      ...rest,
    };
  }
}

export const problemType = (slug: string) => `https://phoenix.dev/problems/${slug}`;
export const titleOf = (status: number) => TITLES[status] ?? 'Error';
