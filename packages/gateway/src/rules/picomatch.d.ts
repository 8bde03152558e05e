// The part of picomatch 4 the cache rules use (the package ships no types).
declare module 'picomatch/posix.js' {
  interface PicomatchOptions {
    /** Let `*` and `**` match names that start with a dot. */
    dot?: boolean;
    /** Longest pattern accepted (picomatch throws beyond it). */
    maxLength?: number;
  }
  function picomatch(glob: string, options?: PicomatchOptions): (input: string) => boolean;
  export default picomatch;
}
