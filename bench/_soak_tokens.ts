/**
 * The tokens the crash soak's effects carry (`T<run>-<agent>-<n>`): each one
 * is written, touched or shown by exactly one effect of the workload.
 * @module
 */

/** A token in a file's content, a command's argv or a text shown to the human. */
export const TOKEN = /T\d+-[a-z]+-\d+/g;
