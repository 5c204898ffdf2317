/**
 * Reads the shape of the config schema itself: which keys a section has (for "did you mean")
 * and what each key defaults to (for `check --print-defaults`). The schema stays the one home
 * of keys and defaults; nothing here lists them again.
 */
import { configSchema } from './schema.js';

/** The part of a zod 4 schema's definition this module reads. */
interface SchemaNode {
  _zod: {
    def: {
      type: string;
      innerType?: SchemaNode;
      in?: SchemaNode;
      shape?: Record<string, SchemaNode>;
      element?: SchemaNode;
      valueType?: SchemaNode;
      options?: SchemaNode[];
    };
  };
  safeParse(value: unknown): { success: boolean; data?: unknown };
}

const ROOT = configSchema as unknown as SchemaNode;

/** The schema under optional / default / prefault / nullable / pipe wrappers. */
function unwrap(schema: SchemaNode): SchemaNode {
  let current = schema;
  for (;;) {
    const def = current._zod.def;
    const inner = def.innerType ?? (def.type === 'pipe' ? def.in : undefined);
    if (!inner) return current;
    current = inner;
  }
}

function childOf(schema: SchemaNode, key: string | number): SchemaNode | undefined {
  const def = unwrap(schema)._zod.def;
  if (def.type === 'object' && typeof key === 'string') return def.shape?.[key];
  if (def.type === 'array' && typeof key === 'number') return def.element;
  if (def.type === 'record') return def.valueType;
  if (def.type === 'union') {
    for (const option of def.options ?? []) {
      const child = childOf(option, key);
      if (child) return child;
    }
  }
  return undefined;
}

function schemaAt(path: readonly (string | number)[]): SchemaNode | undefined {
  let current: SchemaNode | undefined = ROOT;
  for (const key of path) {
    if (!current) return undefined;
    current = childOf(current, key);
  }
  return current;
}

/** The keys the mapping at `path` accepts, or undefined when it is not a fixed mapping. */
export function keysAt(path: readonly (string | number)[]): string[] | undefined {
  const schema = schemaAt(path);
  if (!schema) return undefined;
  const def = unwrap(schema)._zod.def;
  return def.type === 'object' && def.shape ? Object.keys(def.shape) : undefined;
}

/** Every place in the schema a key of that name lives, as `introspection.audience`. */
export function placesOfKey(name: string): string[] {
  const places: string[] = [];
  const walk = (schema: SchemaNode, prefix: string, depth: number) => {
    const def = unwrap(schema)._zod.def;
    if (depth > 4) return;
    if (def.type === 'object' && def.shape) {
      for (const [key, child] of Object.entries(def.shape)) {
        const here = prefix === '' ? key : `${prefix}.${key}`;
        if (key === name) places.push(here);
        walk(child, here, depth + 1);
      }
    } else if (def.type === 'array' && def.element) {
      walk(def.element, `${prefix}[]`, depth + 1);
    }
  };
  walk(ROOT, '', 0);
  return places;
}

/**
 * The value every key with a default takes when the config leaves it out, section by
 * section, in schema order. Keys without a default (required, or optional and off) are left
 * out.
 */
export function schemaDefaults(): Record<string, unknown> {
  const defaultsOf = (schema: SchemaNode): unknown => {
    // Parsing nothing gives the default, or undefined for an optional key that is off.
    const parsed = schema.safeParse(undefined);
    if (parsed.success) return parsed.data;
    const def = unwrap(schema)._zod.def;
    if (def.type !== 'object' || !def.shape) return undefined;
    const section: Record<string, unknown> = {};
    for (const [key, child] of Object.entries(def.shape)) {
      const value = defaultsOf(child);
      if (value !== undefined) section[key] = value;
    }
    return section;
  };
  return defaultsOf(ROOT) as Record<string, unknown>;
}
