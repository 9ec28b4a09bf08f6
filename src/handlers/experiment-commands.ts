/**
 * The experiment command handler lives in the application layer (src/application/experiment-commands.ts);
 * this module keeps its old import path working for the edges that still use it.
 */
export * from '../application/experiment-commands.js';
