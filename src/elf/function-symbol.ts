/**
 * Whether a symbol names code a jump may be written over (or jumped to). Only STT_FUNC does: a
 * jump written into a variable corrupts its value (a counter became 1099500002281), and an
 * indirect function's symbol is the resolver the dynamic linker ran once at load time, not the
 * code calls reach. `hp-agent pack`, the agent's check of a package against the installed files
 * and the engine (hp-agent try included) all ask here, so they refuse the same symbols.
 */
import { HpError } from '../errors.js';
import type { ElfSymbolType } from './types.js';

/**
 * The refusal for `symbol` (of type `type`) in `where`, or undefined for a function.
 * `role`: 'function' for the code to redirect, 'replacement' for the code a patch supplies.
 */
export function notAFunction(symbol: string, type: ElfSymbolType | string, where: string, role: 'function' | 'replacement' = 'function'): HpError | undefined {
  if (type === 'FUNC') return undefined;
  const what = role === 'function' ? 'the function to patch' : 'the replacement';
  if (type === 'GNU_IFUNC') {
    return new HpError(
      'SYMBOL_IS_IFUNC',
      `${symbol} in ${where} is an indirect function (GNU_IFUNC): its symbol is the resolver the dynamic linker ran at load time to choose an implementation, not the code calls reach; name the implementation it chose as ${what} instead`,
      { symbol, where, type },
    );
  }
  const kind = type === 'OBJECT' || type === 'COMMON' || type === 'TLS' ? 'a variable' : 'not a function';
  return new HpError(
    'SYMBOL_NOT_FUNCTION',
    `${symbol} in ${where} is ${/^[AEIOU]/.test(type) ? 'an' : 'a'} ${type} symbol (${kind}), not a function: ${role === 'function' ? 'a jump written over it would corrupt what it holds' : 'a patched function cannot jump to it'}`,
    { symbol, where, type },
  );
}
