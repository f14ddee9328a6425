// A seeded generator for the differential tests (mulberry32): the same
// seed makes the same cases, so a failure can be replayed.
export function generator(seed) {
  let s = seed | 0;
  const rnd = () => {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { rnd, pick: (a) => a[Math.floor(rnd() * a.length)] };
}
