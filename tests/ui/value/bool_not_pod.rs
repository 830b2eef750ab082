// `bool` is not plain-old-data: only 2 of 256 byte values are valid, and shared memory may
// hold any bytes. The error names `Pod`; store a `u8` instead.

fn main() {
    let _flag = mp::Value::new(true);
}
