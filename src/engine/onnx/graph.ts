// ONNX graph builder: typed tensors with static or symbolic dims, nodes, initializers (embedded or external), serialization.
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export const OPSET = 23;

export type DType = 'float32' | 'float64' | 'int32' | 'int64' | 'bool' | 'uint8';
export type FloatDType = 'float32' | 'float64';
/** A dim is a number (static) or a name (symbolic, e.g. 'batch'). */
export type Dim = number | string;
export type Shape = Dim[];

export type Attr =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: number[] }
  | { kind: 'string'; value: string };

export const attrInt = (value: number): Attr => ({ kind: 'int', value });
export const attrFloat = (value: number): Attr => ({ kind: 'float', value });
export const attrInts = (value: number[]): Attr => ({ kind: 'ints', value });
export const attrString = (value: string): Attr => ({ kind: 'string', value });

export class Tensor {
  constructor(
    readonly graph: Graph,
    readonly name: string,
    readonly dtype: DType,
    readonly shape: Shape,
  ) {}
  get rank(): number {
    return this.shape.length;
  }
  toString(): string {
    return `${this.name}:${this.dtype}[${this.shape.join(',')}]`;
  }
}

/**
 * One node. `op` is an ONNX op type, or the name of a fused op whose `body` holds the ONNX
 * nodes that compute it (autodiff sees the fused op as one node with one hand-derived rule;
 * `saved` are body tensors that rule may reuse).
 */
export interface Node {
  op: string;
  inputs: (Tensor | null)[];
  outputs: Tensor[];
  attrs: Record<string, Attr>;
  body?: Node[];
  saved?: Record<string, Tensor>;
  /** Static facts a VJP rule needs that ONNX keeps in constant inputs (e.g. Slice starts). Not serialized. */
  meta?: Record<string, number | number[]>;
  /** The op's domain when not the default one (e.g. 'com.microsoft' for onnxruntime's contrib ops). */
  domain?: string;
}

export type TypedData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

/** Where an external initializer's bytes live: `location` is relative to the model file's folder. */
export interface ExternalData {
  location: string;
  offset: number;
  length: number;
}

interface Initializer {
  tensor: Tensor;
  data?: TypedData;
  external?: ExternalData;
}

const protoType: Record<DType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float64: onnx.TensorProto.DataType.DOUBLE,
  int32: onnx.TensorProto.DataType.INT32,
  int64: onnx.TensorProto.DataType.INT64,
  bool: onnx.TensorProto.DataType.BOOL,
  uint8: onnx.TensorProto.DataType.UINT8,
};

/** onnxruntime's contrib-op domain (MatMulNBits, MatMulBnb4) and the version of it the graphs import. */
export const CONTRIB_DOMAIN = 'com.microsoft';

export const isFloat = (d: DType): d is FloatDType => d === 'float32' || d === 'float64';

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number') throw new Error(`numel of symbolic shape [${shape.join(',')}]`);
    n *= d;
  }
  return n;
}

export class Graph {
  readonly inputs: Tensor[] = [];
  readonly outputs: Tensor[] = [];
  private readonly initializers: Initializer[] = [];
  private readonly constants = new Map<string, Tensor>();
  private readonly names = new Set<string>();
  private nodeStack: Node[][] = [[]];
  private counter = 0;

  /** `float` is the compute dtype: float32 for real graphs, float64 for finite-difference tests. */
  constructor(
    readonly name: string,
    readonly float: FloatDType = 'float32',
  ) {}

  get nodes(): Node[] {
    return this.nodeStack[0];
  }

  /** A fresh, unique tensor name (deterministic: a counter). */
  fresh(hint: string): string {
    let name = `${hint}_${this.counter++}`;
    while (this.names.has(name)) name = `${hint}_${this.counter++}`;
    this.names.add(name);
    return name;
  }

  private claim(name: string): string {
    if (this.names.has(name)) throw new Error(`duplicate tensor name ${name}`);
    this.names.add(name);
    return name;
  }

  input(name: string, dtype: DType, shape: Shape): Tensor {
    const t = new Tensor(this, this.claim(name), dtype, shape);
    this.inputs.push(t);
    return t;
  }

  /** Marks `t` as a graph output named `name` (an Identity node when the name differs). */
  output(t: Tensor, name?: string): Tensor {
    let out = t;
    if (name !== undefined && name !== t.name) {
      out = new Tensor(this, this.claim(name), t.dtype, t.shape);
      this.addNode({ op: 'Identity', inputs: [t], outputs: [out], attrs: {} });
    }
    this.outputs.push(out);
    return out;
  }

  /** An initializer whose bytes are embedded in the model (tests, small tables). */
  initializer(name: string, dtype: DType, shape: Shape, data: TypedData): Tensor {
    if (data.length !== numel(shape)) throw new Error(`initializer ${name}: ${data.length} values for shape [${shape}]`);
    const t = new Tensor(this, this.claim(name), dtype, shape);
    this.initializers.push({ tensor: t, data });
    return t;
  }

  /** An initializer stored in an external data file beside the model file. */
  externalInitializer(name: string, dtype: DType, shape: Shape, external: ExternalData): Tensor {
    const t = new Tensor(this, this.claim(name), dtype, shape);
    this.initializers.push({ tensor: t, external });
    return t;
  }

  /** A small constant (deduplicated by value), e.g. axes, shapes, scalars. */
  constant(values: ArrayLike<number> | bigint[], dtype: DType, shape: Shape): Tensor {
    const key = `${dtype}|${shape.join(',')}|${Array.from(values as ArrayLike<number>).join(',')}`;
    const hit = this.constants.get(key);
    if (hit) return hit;
    const t = new Tensor(this, this.fresh('const'), dtype, shape);
    this.initializers.push({ tensor: t, data: typedArray(dtype, values) });
    this.constants.set(key, t);
    return t;
  }

  /** A scalar in the compute dtype unless told otherwise. */
  scalar(value: number, dtype: DType = this.float): Tensor {
    return this.constant([value], dtype, []);
  }

  int64s(values: number[]): Tensor {
    return this.constant(values, 'int64', [values.length]);
  }

  addNode(node: Node): Node {
    this.nodeStack[this.nodeStack.length - 1].push(node);
    return node;
  }

  /** Emits a node with freshly named outputs of the given dtypes and shapes. */
  emit(op: string, inputs: (Tensor | null)[], attrs: Record<string, Attr>, outs: [DType, Shape][], meta?: Node['meta'], domain?: string): Tensor[] {
    for (const t of inputs) if (t && t.graph !== this) throw new Error(`${op}: tensor ${t.name} belongs to another graph`);
    const outputs = outs.map(([dtype, shape]) => new Tensor(this, this.fresh(op), dtype, shape));
    this.addNode({ op, inputs, outputs, attrs, ...(meta ? { meta } : {}), ...(domain ? { domain } : {}) });
    return outputs;
  }

  /**
   * Records the nodes `build` emits as the body of one fused node `op` (for autodiff: one node,
   * one hand-derived rule). `build` returns the fused op's outputs and the body tensors its rule reuses.
   */
  fuse(op: string, inputs: Tensor[], attrs: Record<string, Attr>, build: () => { outputs: Tensor[]; saved?: Record<string, Tensor> }): Tensor[] {
    this.nodeStack.push([]);
    let result: { outputs: Tensor[]; saved?: Record<string, Tensor> };
    try {
      result = build();
    } finally {
      const body = this.nodeStack.pop()!;
      if (result!) this.addNode({ op, inputs, outputs: result.outputs, attrs, body, saved: result.saved });
    }
    return result.outputs;
  }

  /** Deterministic ONNX model bytes (ir_version 11, opset 23: RotaryEmbedding). */
  serialize(): Uint8Array {
    const flat: Node[] = [];
    const flatten = (nodes: Node[]) => {
      for (const n of nodes) n.body ? flatten(n.body) : flat.push(n);
    };
    flatten(this.nodes);
    const graph = onnx.GraphProto.create({
      name: this.name,
      node: flat.map((n, i) =>
        onnx.NodeProto.create({
          name: `n${i}_${n.op}`,
          opType: n.op,
          ...(n.domain ? { domain: n.domain } : {}),
          input: n.inputs.map((t) => (t ? t.name : '')),
          output: n.outputs.map((t) => t.name),
          attribute: Object.keys(n.attrs).map((k) => attrProto(k, n.attrs[k])),
        }),
      ),
      initializer: this.initializers.map(initializerProto),
      input: this.inputs.map(valueInfo),
      output: this.outputs.map(valueInfo),
    });
    const model = onnx.ModelProto.create({
      irVersion: 11,
      producerName: 'localtune',
      opsetImport: [
        onnx.OperatorSetIdProto.create({ domain: '', version: OPSET }),
        ...(flat.some((n) => n.domain === CONTRIB_DOMAIN) ? [onnx.OperatorSetIdProto.create({ domain: CONTRIB_DOMAIN, version: 1 })] : []),
      ],
      graph,
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

export function typedArray(dtype: DType, values: ArrayLike<number> | bigint[]): TypedData {
  switch (dtype) {
    case 'float32':
      return Float32Array.from(values as ArrayLike<number>);
    case 'float64':
      return Float64Array.from(values as ArrayLike<number>);
    case 'int32':
      return Int32Array.from(values as ArrayLike<number>);
    case 'int64':
      return BigInt64Array.from(Array.from(values as ArrayLike<number>, (v) => BigInt(v)));
    case 'bool':
    case 'uint8':
      return Uint8Array.from(values as ArrayLike<number>);
  }
}

function attrProto(name: string, a: Attr) {
  const T = onnx.AttributeProto.AttributeType;
  switch (a.kind) {
    case 'int':
      return onnx.AttributeProto.create({ name, type: T.INT, i: a.value });
    case 'float':
      return onnx.AttributeProto.create({ name, type: T.FLOAT, f: a.value });
    case 'ints':
      return onnx.AttributeProto.create({ name, type: T.INTS, ints: a.value });
    case 'string':
      return onnx.AttributeProto.create({ name, type: T.STRING, s: new TextEncoder().encode(a.value) });
  }
}

function valueInfo(t: Tensor) {
  return onnx.ValueInfoProto.create({
    name: t.name,
    type: onnx.TypeProto.create({
      tensorType: onnx.TypeProto.Tensor.create({
        elemType: protoType[t.dtype],
        shape: onnx.TensorShapeProto.create({
          dim: t.shape.map((d) =>
            typeof d === 'number' ? onnx.TensorShapeProto.Dimension.create({ dimValue: d }) : onnx.TensorShapeProto.Dimension.create({ dimParam: d }),
          ),
        }),
      }),
    }),
  });
}

function initializerProto(init: Initializer) {
  const { tensor, data, external } = init;
  const base = { name: tensor.name, dataType: protoType[tensor.dtype], dims: tensor.shape as number[] };
  if (external) {
    return onnx.TensorProto.create({
      ...base,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        onnx.StringStringEntryProto.create({ key: 'location', value: external.location }),
        onnx.StringStringEntryProto.create({ key: 'offset', value: String(external.offset) }),
        onnx.StringStringEntryProto.create({ key: 'length', value: String(external.length) }),
      ],
    });
  }
  const d = data!;
  // raw_data is little-endian, as on every platform Node runs on here.
  return onnx.TensorProto.create({ ...base, rawData: new Uint8Array(d.buffer, d.byteOffset, d.byteLength) });
}
