import { describe, expect, it } from 'vitest';
import { instancesPanels } from './fleet-membership.js';

describe("the dashboard's Fleet (Redis) table", () => {
  it('says the instances could not be listed when they could not, never "0 live instances"', () => {
    const [unknown] = instancesPanels(undefined, 'me');
    expect(unknown).toMatchObject({ kind: 'table', rows: [] });
    expect((unknown as { note: string }).note).toMatch(/cannot be used or failed to list/);
    const [none] = instancesPanels([], 'me');
    expect((none as { note: string }).note).toMatch(/^0 live instances/);
  });
});
