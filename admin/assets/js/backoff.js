// Delays between automatic reconnect attempts: exponential with full jitter, so that a gateway
// restart is not met by every open viewer at the same instant; bounded in count, after which the
// viewer offers a button instead of trying for ever.

export class Backoff {
  /**
   * @param {{base?: number, max?: number, attempts?: number, random?: () => number}} options
   *   base and max in milliseconds; `random` for tests.
   */
  constructor({ base = 1000, max = 30000, attempts = 8, random = Math.random } = {}) {
    this.base = base;
    this.max = max;
    this.attempts = attempts;
    this.random = random;
    this.tried = 0;
  }

  /** The delay before the next attempt, or null when the attempts are used up. */
  next() {
    if (this.tried >= this.attempts) {
      return null;
    }
    const ceiling = Math.min(this.max, this.base * 2 ** this.tried);
    this.tried += 1;
    // Never below half the ceiling: an instant retry after a refused connection helps nobody.
    return Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
  }

  /** Called once a connection works: the next failure starts from the short delays again. */
  reset() {
    this.tried = 0;
  }
}
