// UTF-8 for `list<u8>` bodies: QuickJS has no TextEncoder/TextDecoder.
// Invalid input becomes U+FFFD, as TextDecoder would do.

export function encode(text) {
  const out = new Uint8Array(text.length * 3);
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c >= 0xd800 && c < 0xe000) {
      const d = text.charCodeAt(i + 1);
      if (c < 0xdc00 && d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      } else {
        c = 0xfffd;
      }
    }
    if (c < 0x80) {
      out[n++] = c;
    } else if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
      out[n++] = 0x80 | (c & 0x3f);
    } else if (c < 0x10000) {
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
      out[n++] = 0x80 | (c & 0x3f);
    } else {
      out[n++] = 0xf0 | (c >> 18);
      out[n++] = 0x80 | ((c >> 12) & 0x3f);
      out[n++] = 0x80 | ((c >> 6) & 0x3f);
      out[n++] = 0x80 | (c & 0x3f);
    }
  }
  return out.subarray(0, n);
}

const MIN = [0, 0x80, 0x800, 0x10000];

export function decode(bytes) {
  const units = [];
  let text = "";
  for (let i = 0; i < bytes.length; ) {
    const b = bytes[i++];
    if (b < 0x80) {
      units.push(b);
    } else {
      const n = b >= 0xf5 ? 0 : b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : b >= 0xc2 ? 1 : 0;
      let c = b & (0x3f >> n);
      let j = 0;
      while (j < n && i < bytes.length && (bytes[i] & 0xc0) === 0x80) {
        c = (c << 6) | (bytes[i++] & 0x3f);
        j++;
      }
      if (n === 0 || j < n || c < MIN[n] || c > 0x10ffff || (c >= 0xd800 && c < 0xe000)) {
        units.push(0xfffd);
      } else if (c >= 0x10000) {
        units.push(0xd800 + ((c - 0x10000) >> 10), 0xdc00 + ((c - 0x10000) & 0x3ff));
      } else {
        units.push(c);
      }
    }
    if (units.length >= 8192) {
      text += String.fromCharCode.apply(null, units);
      units.length = 0;
    }
  }
  return text + String.fromCharCode.apply(null, units);
}
