# bindings-node/binding.gyp: what `npm install` builds (node-gyp -C bindings-node), so that the
# addon goes to bindings-node/build/ and never into build/, where CMake trees live (node-gyp
# deletes its build directory on every rebuild). The build itself is the top-level binding.gyp.
{
  "includes": ["../binding.gyp"],
}
