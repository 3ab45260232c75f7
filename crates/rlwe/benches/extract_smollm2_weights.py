# Extracts the squeezed i8 weights (each row scaled to max |w| = 127) of some SmolLM2 layers from
# the Q4_1 (or Q8_0) GGUF, fused per stage (qkv, o, gate_up, down), for the Rhombus benchmark:
#   python3 extract_smollm2_weights.py SmolLM2-135M-Instruct.Q4_1.gguf OUT_DIR 0 15 29
#   BASED_RLWE_WEIGHTS=OUT_DIR cargo bench -p based-rlwe -- rhombus
# Pure Python (no numpy): about 10 s per layer.
import struct, sys
path, out_dir = sys.argv[1], sys.argv[2]; layers = [int(v) for v in sys.argv[3:]]
f = open(path, 'rb'); data = f.read()
off = 0
def rd(fmt):
    global off
    v = struct.unpack_from('<' + fmt, data, off); off += struct.calcsize('<' + fmt); return v
magic, version = rd('4sI'); n_tensors, n_kv = rd('QQ')
def rstr():
    global off
    (n,) = rd('Q'); s = data[off:off+n]; off += n; return s.decode()
sizes = {0:'B',1:'b',2:'H',3:'h',4:'I',5:'i',6:'f',7:'?',10:'Q',11:'q',12:'d'}
def rval(t):
    if t == 8: return rstr()
    if t == 9:
        (et,) = rd('I'); (n,) = rd('Q'); return [rval(et) for _ in range(n)]
    return rd(sizes[t])[0]
align = 32
for _ in range(n_kv):
    k = rstr(); (t,) = rd('I'); v = rval(t)
    if k == 'general.alignment': align = v
infos = {}
for _ in range(n_tensors):
    name = rstr(); (nd,) = rd('I'); dims = rd('Q' * nd); (typ,) = rd('I'); (o,) = rd('Q')
    infos[name] = (dims, typ, o)
base = (off + align - 1) // align * align
def tensor(name):
    dims, typ, o = infos[name]
    n_in, n_out = dims[0], dims[1]
    p = base + o; rows = []
    assert typ in (3, 8), (name, typ)  # Q4_1 or Q8_0
    for r in range(n_out):
        row = []
        for b in range(n_in // 32):
            if typ == 3:
                d, m = struct.unpack_from('<ee', data, p); qs = data[p+4:p+20]; p += 20
                # ggml Q4_1: the 16 low nibbles are values 0..15, the high nibbles 16..31.
                row += [d * (q & 15) + m for q in qs] + [d * (q >> 4) + m for q in qs]
            else:
                (d,) = struct.unpack_from('<e', data, p); qs = struct.unpack_from('<32b', data, p+2); p += 34
                row += [d * q for q in qs]
        rows.append(row)
    return n_out, n_in, rows
def squeeze(rows):
    out = bytearray()
    for row in rows:
        mx = max(abs(v) for v in row) or 1.0
        out += bytes((max(-127, min(127, round(v * 127 / mx))) & 0xff) for v in row)
    return out
for L in layers:
    stages = {'qkv': ['attn_q', 'attn_k', 'attn_v'], 'o': ['attn_output'], 'gate_up': ['ffn_gate', 'ffn_up'], 'down': ['ffn_down']}
    for stage, parts in stages.items():
        blob = bytearray(); n_out_total = 0
        for part in parts:
            n_out, n_in, rows = tensor(f'blk.{L}.{part}.weight'); blob += squeeze(rows); n_out_total += n_out
        open(f'{out_dir}/l{L}_{stage}_{n_out_total}x{n_in}.i8', 'wb').write(blob)
        print(L, stage, n_out_total, n_in, flush=True)
